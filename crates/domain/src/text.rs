//! One rule for text that comes from outside (the API, the dashboard, the CLI), the same for
//! both stores: control characters are refused unless the field says it takes them. Postgres
//! refuses a NUL byte in any text value and SQLite keeps it; names, ids and references that
//! hold an escape sequence or a newline forge log lines and terminal output. Checking here,
//! before a value reaches either database, makes the two stores agree and makes bad input a
//! 4xx naming the field instead of a database error.

/// The control characters a text field takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controls {
    /// None at all: names, ids, references, filters.
    None,
    /// Tab, line feed and carriage return (free text written by people); nothing else.
    Whitespace,
}

/// A text value refused by [`check_text`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} holds the control character {found} at byte {at}; {allowed}")]
pub struct TextError {
    /// The field, as the caller names it (a JSON field, a query parameter).
    pub field: String,
    /// The character, as `U+0000`.
    pub found: String,
    /// Its byte offset in the value.
    pub at: usize,
    allowed: &'static str,
}

/// Checks `text`, the value of `field`, against the rule: no control character (Unicode
/// category Cc: C0, DEL, C1) but those `controls` allows.
pub fn check_text(field: &str, text: &str, controls: Controls) -> Result<(), TextError> {
    let allowed = |character: char| {
        controls == Controls::Whitespace && matches!(character, '\t' | '\n' | '\r')
    };
    match text
        .char_indices()
        .find(|(_, character)| character.is_control() && !allowed(*character))
    {
        None => Ok(()),
        Some((at, character)) => Err(TextError {
            field: field.to_string(),
            found: format!("U+{:04X}", u32::from(character)),
            at,
            allowed: match controls {
                Controls::None => "it takes no control characters",
                Controls::Whitespace => "it takes no control characters but tab and newline",
            },
        }),
    }
}

/// A row id written the one way: a decimal integer without sign, spaces or leading zeros
/// (`3`, never `+3`, `03` or ` 3`), so one resource has one path and exact-path rules in a
/// proxy in front cannot be got around. Anything else names nothing.
pub fn canonical_id(text: &str) -> Option<i64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && !(text.len() > 1 && text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_one_spelling() {
        for (text, expected) in [
            ("3", Some(3)),
            ("0", Some(0)),
            ("9223372036854775807", Some(i64::MAX)),
            ("9223372036854775808", None),
            ("+3", None),
            ("-3", None),
            ("03", None),
            ("00", None),
            (" 3", None),
            ("3 ", None),
            ("", None),
            ("3e0", None),
            ("٣", None),
        ] {
            assert_eq!(canonical_id(text), expected, "{text:?}");
        }
    }

    #[test]
    fn control_characters_are_refused_unless_the_field_takes_them() {
        // (text, what the field takes, the refused character and its offset if refused)
        type Case<'a> = (&'a str, Controls, Option<(&'a str, usize)>);
        let cases: &[Case] = &[
            ("plain name", Controls::None, None),
            ("ünïcode ✓", Controls::None, None),
            ("", Controls::None, None),
            ("a\0b", Controls::None, Some(("U+0000", 1))),
            ("a\0b", Controls::Whitespace, Some(("U+0000", 1))),
            ("line\nbreak", Controls::None, Some(("U+000A", 4))),
            ("line\nbreak\ttab\r", Controls::Whitespace, None),
            ("\u{1b}[31mERROR", Controls::None, Some(("U+001B", 0))),
            ("\u{1b}[31mERROR", Controls::Whitespace, Some(("U+001B", 0))),
            ("del\u{7f}", Controls::None, Some(("U+007F", 3))),
            ("é\u{85}", Controls::None, Some(("U+0085", 2))),
        ];
        for (text, controls, expected) in cases {
            let outcome = check_text("name", text, *controls);
            match expected {
                None => assert_eq!(outcome, Ok(()), "{text:?}"),
                Some((found, at)) => {
                    let error = outcome.expect_err(text);
                    assert_eq!((error.found.as_str(), error.at), (*found, *at), "{text:?}");
                    assert!(error.to_string().starts_with("name holds"), "{error}");
                }
            }
        }
    }
}
