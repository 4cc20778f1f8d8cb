//! Account field rules shared by registration and settings.

use super::validate::{char_len, max_chars};
use crate::error::{ApiError, ApiResult};

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;
pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_DESCRIPTION_WORDS: usize = 500;
pub const MAX_DESCRIPTION_CHARS: usize = 5_000;
pub const MAX_URL_CHARS: usize = 2_048;
pub const MAX_CUSTOM_CSS_CHARS: usize = 10_000;

/// 3–32 characters from `A–Z a–z 0–9 _ . -`.
pub fn username(name: &str) -> ApiResult<()> {
    let len = char_len(name);
    let allowed = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !(3..=32).contains(&len) || !allowed {
        return Err(ApiError::bad_request(
            "username must be 3-32 characters from letters, digits, '_', '.' and '-'",
        ));
    }
    Ok(())
}

/// A single `@` between non-empty parts, no white space, at most 254 characters.
pub fn email(email: &str) -> ApiResult<()> {
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if !valid {
        return Err(ApiError::bad_request("email is not a valid address"));
    }
    max_chars(email, MAX_EMAIL_CHARS, "email")
}

pub fn password(password: &str) -> ApiResult<()> {
    let len = char_len(password);
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&len) {
        return Err(ApiError::bad_request(format!(
            "password must be {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

/// At most 500 whitespace-separated words and 5,000 characters.
pub fn description(text: &str) -> ApiResult<()> {
    if text.split_whitespace().count() > MAX_DESCRIPTION_WORDS {
        return Err(ApiError::bad_request(format!(
            "description must be at most {MAX_DESCRIPTION_WORDS} words"
        )));
    }
    max_chars(text, MAX_DESCRIPTION_CHARS, "description")
}

pub fn url(value: &str, field: &str) -> ApiResult<()> {
    max_chars(value, MAX_URL_CHARS, field)
}

pub fn custom_css(value: &str) -> ApiResult<()> {
    max_chars(value, MAX_CUSTOM_CSS_CHARS, "custom_css")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["abc", "A.b-c_9", &"x".repeat(32)] {
            assert!(username(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", &"x".repeat(33), "has space", "émile", "a/b"] {
            assert!(username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert!(email("a@b").is_ok());
        for bad in ["ab", "@b", "a@", "a@b@c", "a b@c"] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert!(email(&format!("{}@b.c", "a".repeat(251))).is_err());
    }

    #[test]
    fn passwords_and_descriptions() {
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(password(&"p".repeat(129)).is_err());
        assert!(description(&"word ".repeat(500)).is_ok());
        assert!(description(&"word ".repeat(501)).is_err());
        assert!(description(&"w".repeat(5001)).is_err());
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn usernames_are_3_to_32_of_the_allowed_characters(name in "\\PC{0,40}|[A-Za-z0-9_.-]{0,40}") {
            let allowed = name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            let len = name.chars().count();
            prop_assert_eq!(username(&name).is_ok(), allowed && (3..=32).contains(&len));
        }

        /// Passwords are counted in characters: 8 to 128 of anything.
        #[test]
        fn passwords_accept_exactly_8_to_128_characters(chars in proptest::collection::vec(any::<char>(), 0..140)) {
            let text: String = chars.iter().collect();
            prop_assert_eq!(password(&text).is_ok(), (8..=128).contains(&chars.len()));
        }

        #[test]
        fn emails_need_one_at_between_non_empty_parts_and_no_white_space(
            local in "\\PC{0,6}", domain in "\\PC{0,6}",
        ) {
            let address = format!("{local}@{domain}");
            let expected = !local.is_empty() && !domain.is_empty() && !local.contains('@')
                && !domain.contains('@') && !address.chars().any(char::is_whitespace);
            prop_assert_eq!(email(&address).is_ok(), expected);
            prop_assert!(email(&address.replace('@', "")).is_err());
        }

        #[test]
        fn descriptions_are_limited_in_words_and_characters(
            words in proptest::collection::vec("\\PC{1,3}", 0..600),
        ) {
            let text = words.join(" ");
            let ok = text.split_whitespace().count() <= MAX_DESCRIPTION_WORDS
                && text.chars().count() <= MAX_DESCRIPTION_CHARS;
            prop_assert_eq!(description(&text).is_ok(), ok);
        }
    }
}
