//! The crate's one error type.

use std::fmt;

/// Everything that can go wrong when calling into convkit.
///
/// Every message names the tensor or parameter at fault and, for shapes, both the expected and
/// the actual shape, e.g. `conv2d weight: expected 4-D [K, C/groups, R, S] with C/groups = 3,
/// got [8, 4, 3, 3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A tensor does not have the shape an operation needs.
    Shape {
        /// Which tensor, e.g. `"conv2d weight"`.
        tensor: String,
        /// What was expected, in words and numbers.
        expected: String,
        /// The shape that was given.
        actual: Vec<usize>,
    },
    /// A data buffer's length does not match the product of the shape it came with.
    Length {
        /// Which tensor.
        tensor: String,
        /// The product of the shape.
        expected: usize,
        /// The buffer's length.
        actual: usize,
    },
    /// A parameter is out of its domain (zero stride, groups not dividing channels, …).
    Parameter {
        /// The parameter's name, e.g. `"stride"`.
        name: String,
        /// Its offending value, printed.
        value: String,
        /// Why it is wrong.
        reason: String,
    },
    /// A size computation overflowed `usize`.
    Overflow {
        /// What was being computed.
        what: String,
    },
    /// The chosen algorithm cannot handle this problem.
    Unsupported {
        /// The algorithm's name.
        algorithm: String,
        /// Why not.
        reason: String,
    },
    /// A file could not be read or written.
    Io {
        /// The path.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// A file or byte stream is malformed.
    Format {
        /// What was being read.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    pub(crate) fn shape(tensor: impl Into<String>, expected: impl Into<String>, actual: &[usize]) -> Self {
        Error::Shape { tensor: tensor.into(), expected: expected.into(), actual: actual.to_vec() }
    }

    pub(crate) fn param(name: impl Into<String>, value: impl fmt::Display, reason: impl Into<String>) -> Self {
        Error::Parameter { name: name.into(), value: value.to_string(), reason: reason.into() }
    }

    pub(crate) fn overflow(what: impl Into<String>) -> Self {
        Error::Overflow { what: what.into() }
    }

    pub(crate) fn format(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Format { what: what.into(), reason: reason.into() }
    }

    pub(crate) fn io(path: &std::path::Path, err: std::io::Error) -> Self {
        Error::Io { path: path.display().to_string(), reason: err.to_string() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { tensor, expected, actual } => {
                write!(f, "{tensor}: expected {expected}, got {actual:?}")
            }
            Error::Length { tensor, expected, actual } => {
                write!(f, "{tensor}: shape needs {expected} elements, buffer has {actual}")
            }
            Error::Parameter { name, value, reason } => {
                write!(f, "invalid {name} = {value}: {reason}")
            }
            Error::Overflow { what } => write!(f, "size overflow computing {what}"),
            Error::Unsupported { algorithm, reason } => {
                write!(f, "algorithm {algorithm} cannot run this problem: {reason}")
            }
            Error::Io { path, reason } => write!(f, "cannot access {path}: {reason}"),
            Error::Format { what, reason } => write!(f, "malformed {what}: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for `std::result::Result<T, convkit::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Product of dimensions with overflow checking.
pub(crate) fn checked_product(dims: &[usize], what: &str) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| Error::overflow(what.to_string()))
}

/// Checks that `actual` equals `expected`, naming `tensor` in the error.
pub(crate) fn expect_shape(tensor: &str, actual: &[usize], expected: &[usize]) -> Result<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(Error::shape(tensor, format!("{expected:?}"), actual))
    }
}
