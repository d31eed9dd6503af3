//! The `{{…}}` variables of template text, scanned by hand.
//!
//! One scanner serves the definition's rules, rendering and the lints, so that what a
//! template accepts as a variable is exactly what a device substitutes.

use super::definition::ParameterFormat;
use std::fmt;

/// One variable of a template's text: `{{3}}` in a POSITIONAL template, `{{first_name}}` in
/// a NAMED one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Variable {
    Positional(u32),
    Named(String),
}

impl Variable {
    /// Reads what stood between the braces, as `format` spells variables.
    pub(crate) fn parse(inner: &str, format: ParameterFormat) -> Result<Self, String> {
        match format {
            ParameterFormat::Positional => {
                let number = inner
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0 && !inner.starts_with(['0', '+']));
                number.map(Self::Positional).ok_or_else(|| {
                    format!("POSITIONAL templates number their variables {{{{1}}}}, {{{{2}}}}, …; found {{{{{inner}}}}}")
                })
            }
            ParameterFormat::Named => {
                let mut chars = inner.chars();
                let well_formed = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                    && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if well_formed {
                    Ok(Self::Named(inner.to_owned()))
                } else {
                    Err(format!(
                        "NAMED variables are lowercase letters, digits and underscores, starting with a letter; found {{{{{inner}}}}}"
                    ))
                }
            }
        }
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Positional(n) => write!(f, "{{{{{n}}}}}"),
            Self::Named(name) => write!(f, "{{{{{name}}}}}"),
        }
    }
}

/// A stretch of template text: fixed text, or the inside of one `{{…}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Variable(&'a str),
}

pub(crate) fn pieces(text: &str) -> Pieces<'_> {
    Pieces { rest: text }
}

pub(crate) struct Pieces<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        if let Some(after) = self.rest.strip_prefix("{{") {
            if let Some((inner, rest)) = after.split_once("}}") {
                self.rest = rest;
                return Some(Piece::Variable(inner));
            }
            // An unclosed `{{` is text: definitions refuse it, devices show it as it is.
            return Some(Piece::Text(std::mem::take(&mut self.rest)));
        }
        let end = self.rest.find("{{").unwrap_or(self.rest.len());
        let (text, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(Piece::Text(text))
    }
}

/// Every variable of `text`, each occurrence in order; refuses malformed placeholders.
pub(crate) fn occurrences(text: &str, format: ParameterFormat) -> Result<Vec<Variable>, String> {
    pieces(text)
        .filter_map(|piece| match piece {
            Piece::Text(t) if t.contains("{{") => Some(Err("`{{` without a closing `}}`".into())),
            Piece::Text(_) => None,
            Piece::Variable(inner) => Some(Variable::parse(inner, format)),
        })
        .collect()
}

/// The distinct variables of valid `text` in the order a send supplies their values:
/// positional ones by number, named ones by first appearance. Malformed ones are skipped.
pub(crate) fn distinct(text: &str, format: ParameterFormat) -> Vec<Variable> {
    let mut found: Vec<Variable> = Vec::new();
    for piece in pieces(text) {
        if let Piece::Variable(inner) = piece
            && let Ok(variable) = Variable::parse(inner, format)
            && !found.contains(&variable)
        {
            found.push(variable);
        }
    }
    if format == ParameterFormat::Positional {
        found.sort_by_key(|v| match v {
            Variable::Positional(n) => *n,
            Variable::Named(_) => u32::MAX,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use ParameterFormat::{Named, Positional};

    #[test]
    fn text_splits_into_fixed_text_and_variables() {
        let found: Vec<_> = pieces("Hi {{1}}, order {{2}}!").collect();
        assert_eq!(
            found,
            [
                Piece::Text("Hi "),
                Piece::Variable("1"),
                Piece::Text(", order "),
                Piece::Variable("2"),
                Piece::Text("!"),
            ]
        );
    }

    #[test]
    fn an_unclosed_placeholder_is_text_and_refused_by_the_rules() {
        let found: Vec<_> = pieces("a {{1} b").collect();
        assert_eq!(found, [Piece::Text("a "), Piece::Text("{{1} b")]);
        assert_eq!(
            occurrences("a {{1} b", Positional),
            Err("`{{` without a closing `}}`".to_owned())
        );
    }

    #[test]
    fn positional_variables_are_plain_positive_numbers() {
        assert_eq!(
            Variable::parse("12", Positional),
            Ok(Variable::Positional(12))
        );
        for bad in ["0", "01", "+1", " 1", "x", ""] {
            assert!(Variable::parse(bad, Positional).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn named_variables_are_snake_case_starting_with_a_letter() {
        assert_eq!(
            Variable::parse("first_name2", Named),
            Ok(Variable::Named("first_name2".into()))
        );
        for bad in ["1st", "First", "first-name", "_x", "", "a b"] {
            assert!(Variable::parse(bad, Named).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn distinct_orders_positional_by_number_and_named_by_appearance() {
        assert_eq!(
            distinct("{{2}} {{1}} {{2}}", Positional),
            [Variable::Positional(1), Variable::Positional(2)]
        );
        assert_eq!(
            distinct("{{b}} {{a}} {{b}}", Named),
            [Variable::Named("b".into()), Variable::Named("a".into())]
        );
        assert_eq!(Variable::Named("a".into()).to_string(), "{{a}}");
    }
}
