//! [`PatternField`]: where a function pattern was written, for the errors that name it.

/// The field a function pattern was written in, named by
/// [`Error::InvalidPattern`](crate::Error::InvalidPattern) and
/// [`Error::NoMatchingFunction`](crate::Error::NoMatchingFunction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PatternField {
    /// [`Probe::attach_to_func_name`](crate::Probe::attach_to_func_name), a glob.
    AttachToFuncName,
    /// [`Probe::match_func_name`](crate::Probe::match_func_name), a regular expression.
    MatchFuncName,
    /// The glob of a `kprobe.multi/<glob>`-style section.
    Section,
}

impl PatternField {
    /// `glob` or `regular expression`.
    pub fn syntax(self) -> &'static str {
        match self {
            Self::MatchFuncName => "regular expression",
            Self::AttachToFuncName | Self::Section => "glob",
        }
    }
}

impl std::fmt::Display for PatternField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AttachToFuncName => "attach_to_func_name",
            Self::MatchFuncName => "match_func_name",
            Self::Section => "the section's pattern",
        })
    }
}
