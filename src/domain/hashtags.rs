//! Hashtags: `#` then one or more Unicode letters, digits or `_`; matched ignoring case.

/// The distinct hashtags of `text`, lower-case, without `#`, in order of first use.
pub fn extract(text: &str) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('#') {
        rest = &rest[pos + 1..];
        let end = rest
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
            .map_or(rest.len(), |(i, _)| i);
        if end > 0 {
            let tag = rest[..end].to_lowercase();
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        rest = &rest[end..];
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_lower_case_distinct_and_unicode() {
        assert_eq!(
            extract("Hello #Mirage #tips #MIRAGE #été_2 # #!x"),
            vec!["mirage", "tips", "été_2"]
        );
        assert!(extract("no tags here").is_empty());
    }

    use proptest::prelude::*;

    fn is_tag_char(c: char) -> bool {
        c.is_alphanumeric() || c == '_'
    }

    /// Text of `len` characters that `class` accepts (std's own Unicode
    /// tables decide, not a regex engine's, which may be of another version).
    fn text_of(
        class: fn(char) -> bool,
        len: std::ops::Range<usize>,
    ) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>().prop_filter("class", move |c| class(*c)), len)
            .prop_map(String::from_iter)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the text, extraction returns distinct, non-empty,
        /// lower-case tags, each the lower-cased run after some `#`.
        #[test]
        fn any_text_gives_distinct_lower_case_tags_found_in_it(text in any::<String>()) {
            let tags = extract(&text);
            let runs: Vec<String> = text
                .split('#')
                .skip(1)
                .map(|after| after.chars().take_while(|c| is_tag_char(*c)).collect::<String>())
                .filter(|run| !run.is_empty())
                .map(|run| run.to_lowercase())
                .collect();
            for (i, tag) in tags.iter().enumerate() {
                prop_assert!(!tag.is_empty());
                prop_assert_eq!(&tag.to_lowercase(), tag);
                prop_assert!(runs.contains(tag), "{tag:?} is no run after a # in {text:?}");
                prop_assert!(!tags[..i].contains(tag), "{tag:?} twice");
            }
            // And every such run is found.
            for run in &runs {
                prop_assert!(tags.contains(run), "{run:?} missed in {text:?}");
            }
        }

        /// Text built from known tags and tag-free filler yields exactly
        /// those tags, lower-cased, once each, in order of first use.
        #[test]
        fn tags_written_between_filler_are_all_found_in_order(
            words in proptest::collection::vec(text_of(is_tag_char, 1..12), 0..8),
            fillers in proptest::collection::vec(text_of(|c| !is_tag_char(c) && c != '#', 1..6), 9),
        ) {
            let mut text = fillers[0].clone();
            for (word, filler) in words.iter().zip(&fillers[1..]) {
                text.push('#');
                text.push_str(word);
                text.push_str(filler);
            }
            let mut expected: Vec<String> = Vec::new();
            for word in &words {
                let tag = word.to_lowercase();
                if !expected.contains(&tag) {
                    expected.push(tag);
                }
            }
            prop_assert_eq!(extract(&text), expected);
        }
    }
}
