//! `texstream._texstream`: the native half of the texstream Python package — pyo3 and
//! rust-numpy over the texstream library itself (its `Node`, frames and protocol), not
//! a second implementation. The Python half (`texstream/__init__.py`) gives it its
//! public shape: `Sender`, `Receiver`, `Frame` and the exceptions.
//!
//! Modules: [`node`] (the endpoint and its waits), [`formats`] (which arrays go on the
//! wire as which pixel format, and back), [`inbox`] (texts and files kept until taken),
//! [`errors`] (the typed exceptions).

mod errors;
mod formats;
mod inbox;
mod node;

use pyo3::prelude::*;

#[pymodule]
fn _texstream(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<node::PyNode>()?;
    m.add("ACCEPTED", formats::ACCEPTED)?;
    m.add("PROTOCOL_VERSION", texstream::protocol::VERSION)?;
    Ok(())
}
