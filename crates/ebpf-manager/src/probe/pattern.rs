//! A probe's function pattern: the glob of `attach_to_func_name`, or the regular expression of
//! `match_func_name` (the Go `MatchFuncName`).

use crate::{
    error::PatternField, kernel::FunctionIndex, Error, Probe, ProbeIdentificationPair, Result,
};

/// A compiled function pattern.
#[derive(Debug)]
pub(crate) enum Pattern {
    /// A glob, and the field it came from (for messages).
    Glob(glob::Pattern, PatternField),
    Regex(regex::Regex),
}

impl Pattern {
    /// The probe's pattern, if it declares one (both at once is an error).
    pub(crate) fn of(id: &ProbeIdentificationPair, probe: &Probe) -> Result<Option<Self>> {
        Self::compile(
            id,
            probe.attach_to_func_name.as_deref(),
            probe.match_func_name.as_deref(),
        )
    }

    /// The glob of a `kprobe.multi/<glob>`-style section.
    pub(crate) fn of_section(
        id: &ProbeIdentificationPair,
        glob: Option<&str>,
    ) -> Result<Option<Self>> {
        Ok(match Self::compile(id, glob, None)? {
            Some(Self::Glob(p, _)) => Some(Self::Glob(p, PatternField::Section)),
            other => other,
        })
    }

    /// `glob` (attach_to_func_name) or `regex` (match_func_name) compiled.
    pub(crate) fn compile(
        id: &ProbeIdentificationPair,
        glob: Option<&str>,
        regex: Option<&str>,
    ) -> Result<Option<Self>> {
        let invalid = |field, pattern: &str, reason: String| Error::InvalidPattern {
            id: id.clone(),
            field,
            pattern: pattern.to_owned(),
            reason,
        };
        match (glob, regex) {
            (Some(_), Some(_)) => Err(Error::InvalidProbe {
                id: id.clone(),
                reason: "attach_to_func_name (a glob) and match_func_name (a regular expression) \
                         both set: keep one"
                    .into(),
            }),
            (Some(g), None) => glob::Pattern::new(g)
                .map(|p| Some(Self::Glob(p, PatternField::AttachToFuncName)))
                .map_err(|e| invalid(PatternField::AttachToFuncName, g, e.to_string())),
            (None, Some(r)) => regex::Regex::new(r)
                .map(|p| Some(Self::Regex(p)))
                .map_err(|e| invalid(PatternField::MatchFuncName, r, e.to_string())),
            (None, None) => Ok(None),
        }
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Glob(p, _) => p.as_str(),
            Self::Regex(r) => r.as_str(),
        }
    }

    /// The field the user wrote it in, and its syntax, for messages.
    pub(crate) fn field(&self) -> PatternField {
        match self {
            Self::Glob(_, field) => *field,
            Self::Regex(_) => PatternField::MatchFuncName,
        }
    }

    /// The error of a pattern that matched none of the `searched` names of `source_file`.
    pub(crate) fn no_match(
        &self,
        id: &ProbeIdentificationPair,
        searched: usize,
        source_file: &std::path::Path,
    ) -> Error {
        Error::NoMatchingFunction {
            id: id.clone(),
            field: self.field(),
            pattern: self.as_str().to_owned(),
            searched,
            source_file: source_file.to_owned(),
        }
    }

    /// Whether `name` matches (a glob whole, a regular expression anywhere).
    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            Self::Glob(p, _) => p.matches(name),
            Self::Regex(r) => r.is_match(name),
        }
    }

    /// The kernel function it selects: an exact name, else the first match in file order.
    pub(crate) fn find<'a>(&self, index: &'a FunctionIndex) -> Option<&'a str> {
        match self {
            Self::Glob(p, _) => index.find(p),
            Self::Regex(r) => index.find_regex(r),
        }
    }

    /// Every kernel function it matches, in file order, each once.
    pub(crate) fn find_all<'a>(&self, index: &'a FunctionIndex) -> Vec<&'a str> {
        match self {
            Self::Glob(p, _) => index.find_all(p),
            Self::Regex(r) => index.find_all_regex(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFF: &str = include_str!("../../fixtures/available_filter_functions.txt");

    #[test]
    fn regular_expressions_are_unanchored_and_exact_names_win() {
        let index = FunctionIndex::from_available_filter_functions("aff".into(), AFF);
        let id = ProbeIdentificationPair::new("", "f");
        let re = |r: &str| Pattern::compile(&id, None, Some(r)).unwrap().unwrap();
        let first_mkdir = index
            .names_for_tests()
            .iter()
            .find(|n| n.contains("mkdir"))
            .cloned();
        assert_eq!(re("mkdir").find(&index).map(str::to_owned), first_mkdir);
        assert_eq!(re("^vfs_mkdir$").find(&index), Some("vfs_mkdir"));
        assert_eq!(
            re("vfs_mkdir").find(&index),
            Some("vfs_mkdir"),
            "exact name wins"
        );
        assert!(re("^vfs_(mk|rm)dir$").find_all(&index).len() == 2);
        // The message names the field and the syntax the user wrote.
        let err = Pattern::compile(&id, None, Some("(")).unwrap_err();
        assert!(
            err.to_string()
                .contains("match_func_name `(` is not a valid regular expression"),
            "{err}"
        );
        let err = Pattern::compile(&id, Some("["), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("attach_to_func_name `[` is not a valid glob"),
            "{err}"
        );
        let none = re("^no_such_function$");
        assert!(none.find(&index).is_none());
        let err = none.no_match(&id, index.len(), index.source());
        assert!(
            err.to_string()
                .contains("matches match_func_name `^no_such_function$`"),
            "{err}"
        );
        assert!(matches!(
            Pattern::compile(&id, Some("a*"), Some("a")),
            Err(Error::InvalidProbe { .. })
        ));
    }
}
