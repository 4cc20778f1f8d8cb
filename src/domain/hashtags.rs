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
}
