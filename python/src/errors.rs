//! The package's typed exceptions, raised from Rust: the classes live in
//! `texstream/_errors.py` (so that they can also derive from `ValueError` and
//! `TimeoutError`), and are looked up by name when one is raised.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// Which of the package's exceptions an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `texstream.Error`: anything else that failed (a listen, a file, a peer's verdict).
    Error,
    /// `texstream.BadArray`: an array `send` does not take (also a `ValueError`).
    BadArray,
    /// `texstream.Timeout`: nothing came in time (also a `TimeoutError`).
    Timeout,
    /// `texstream.AuthError`: the peer refused our token, or we refused its.
    AuthError,
    /// `texstream.Closed`: the endpoint is closed, or no peer is there to take it.
    Closed,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::Error => "Error",
            Kind::BadArray => "BadArray",
            Kind::Timeout => "Timeout",
            Kind::AuthError => "AuthError",
            Kind::Closed => "Closed",
        }
    }
}

/// The exception of `kind` with `message`, ready to raise.
pub fn error(py: Python<'_>, kind: Kind, message: impl Into<String>) -> PyErr {
    let message = message.into();
    let class = py
        .import("texstream._errors")
        .and_then(|m| m.getattr(kind.class_name()))
        .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
    match class {
        Ok(class) => PyErr::from_type(class, message),
        // Only when the package itself is broken; still says what failed.
        Err(e) => PyRuntimeError::new_err(format!("{message} (texstream._errors: {e})")),
    }
}
