//! Text rules shared by several endpoints. Lengths count Unicode scalar values.

use crate::error::{ApiError, ApiResult};

/// Length in Unicode characters (scalar values), never bytes.
pub fn char_len(text: &str) -> usize {
    text.chars().count()
}

/// A required text field: present and not blank, else 400 naming the field.
pub fn required<'a>(value: &'a Option<String>, field: &str) -> ApiResult<&'a str> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ApiError::bad_request(format!("{field} is required"))),
    }
}

/// At most `max` characters, else 400 naming the field.
pub fn max_chars(value: &str, max: usize, field: &str) -> ApiResult<()> {
    if char_len(value) > max {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_count_characters_not_bytes() {
        assert_eq!(char_len("héllo"), 5);
        assert!(max_chars(&"é".repeat(512), 512, "content").is_ok());
        assert!(max_chars(&"é".repeat(513), 512, "content").is_err());
    }

    #[test]
    fn blank_is_missing() {
        assert!(required(&Some("  ".into()), "content").is_err());
        assert!(required(&None, "content").is_err());
        assert_eq!(required(&Some(" a ".into()), "content").unwrap(), " a ");
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A limit of `max` accepts exactly the texts of at most `max`
        /// characters, however many bytes each character takes.
        #[test]
        fn max_chars_accepts_exactly_up_to_the_limit_in_characters(
            chars in proptest::collection::vec(any::<char>(), 0..40),
            max in 0usize..40,
        ) {
            let text: String = chars.iter().collect();
            prop_assert_eq!(char_len(&text), chars.len());
            let result = max_chars(&text, max, "field");
            prop_assert_eq!(result.is_ok(), chars.len() <= max);
            if let Err(err) = result {
                prop_assert!(err.to_string().contains("field"));
            }
        }

        /// Required means at least one character that is not white space,
        /// and the value passes through untouched.
        #[test]
        fn required_accepts_exactly_non_blank_text(text in any::<String>()) {
            let value = Some(text.clone());
            match required(&value, "field") {
                Ok(v) => {
                    prop_assert!(text.chars().any(|c| !c.is_whitespace()));
                    prop_assert_eq!(v, text.as_str());
                }
                Err(_) => prop_assert!(text.chars().all(char::is_whitespace)),
            }
        }
    }
}
