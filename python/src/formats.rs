//! Arrays ↔ frames: which numpy arrays `send` puts on the wire in which pixel format,
//! and the array a received frame becomes. A new wire format is one more row in
//! [`LAYOUTS`] (and its dtype in [`frame_array`]).

use numpy::{
    PyArray1, PyArray3, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray3, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use texstream::frame::{Frame, FrameGeometry, PixelFormat};
use texstream::protocol::Limits;

/// One array layout and the wire format it travels as.
struct Layout {
    format: PixelFormat,
    /// numpy's dtype kind (`u` unsigned, `f` float) and bytes per channel.
    kind: u8,
    itemsize: usize,
    channels: usize,
}

/// What `send` takes. RGBA8 only, for now: the wire's formats are RGBA8 and BGRA8 (4
/// bytes a pixel, 8 bits a channel), and BGRA8 is what GPU senders read back.
const LAYOUTS: &[Layout] = &[Layout {
    format: PixelFormat::Rgba8,
    kind: b'u',
    itemsize: 1,
    channels: 4,
}];

/// What `send` accepts, for the error that names it.
pub const ACCEPTED: &str =
    "a C-contiguous numpy array of dtype uint8 and shape (height, width, 4) (RGBA8)";

/// The name of a wire format as Python sees it (`Frame.format`).
pub fn format_name(format: PixelFormat) -> &'static str {
    match format {
        PixelFormat::Rgba8 => "rgba8",
        PixelFormat::Bgra8 => "bgra8",
    }
}

/// An array `send` takes: the geometry of its frame, and the array borrowed for
/// reading while it is copied.
pub struct Sendable<'py> {
    pub geometry: FrameGeometry,
    pub pixels: PyReadonlyArray3<'py, u8>,
}

/// Checks `obj` against [`LAYOUTS`] and the protocol's limits; the error says what
/// was wrong with it and what is accepted.
pub fn sendable<'py>(obj: &Bound<'py, PyAny>) -> Result<Sendable<'py>, String> {
    let Ok(array) = obj.cast::<PyUntypedArray>() else {
        let type_name = obj
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        return Err(format!("expected {ACCEPTED}; got a {type_name}"));
    };
    let shape = array.shape().to_vec();
    let dtype = array.dtype();
    let what = format!("a {dtype} array of shape {}", shape_text(&shape));
    if shape.len() != 3 {
        return Err(format!(
            "expected {ACCEPTED}; got {what} ({}-D, not 3-D)",
            shape.len()
        ));
    }
    let layout = LAYOUTS.iter().find(|l| {
        l.kind == dtype.kind() && l.itemsize == dtype.itemsize() && l.channels == shape[2]
    });
    let Some(layout) = layout else {
        return Err(format!("expected {ACCEPTED}; got {what}"));
    };
    let (height, width) = (shape[0], shape[1]);
    if height == 0 || width == 0 {
        return Err(format!("expected {ACCEPTED}; got {what}, which is empty"));
    }
    let max = Limits::default().max_dimension as usize;
    if height > max || width > max {
        return Err(format!(
            "expected {ACCEPTED} of at most {max}x{max} pixels; got {what}"
        ));
    }
    if !array.is_c_contiguous() {
        return Err(format!(
            "expected {ACCEPTED}; got {what} that is not C-contiguous \
             (numpy.ascontiguousarray makes a contiguous copy)"
        ));
    }
    let typed = array
        .cast::<PyArray3<u8>>()
        .map_err(|_| format!("expected {ACCEPTED}; got {what}"))?;
    let pixels = typed
        .try_readonly()
        .map_err(|e| format!("the array cannot be read now: {e}"))?;
    // Both at most 16384 (checked above): they fit in u32, and so does a row.
    let bytes_per_pixel = (layout.itemsize * layout.channels) as u32;
    Ok(Sendable {
        geometry: FrameGeometry {
            width: width as u32,
            height: height as u32,
            format: layout.format,
            bytes_per_row: width as u32 * bytes_per_pixel,
        },
        pixels,
    })
}

fn shape_text(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A received frame as a new (height, width, 4) uint8 array: the frame's one copy on
/// this side, made without the GIL, dropping any row padding. The array is the
/// caller's to keep and write; the frame's buffer goes back to the node's pool.
pub fn frame_array<'py>(py: Python<'py>, frame: Frame) -> PyResult<Bound<'py, PyAny>> {
    let m = *frame.meta();
    let pixels = py.detach(move || tight_pixels(&frame));
    let array = PyArray1::from_vec(py, pixels).reshape([m.height as usize, m.width as usize, 4])?;
    Ok(array.into_any())
}

/// The pixels without row padding, `width * 4` bytes a row.
fn tight_pixels(frame: &Frame) -> Vec<u8> {
    let m = frame.meta();
    let row_bytes = m.width as usize * PixelFormat::BYTES_PER_PIXEL as usize;
    if m.bytes_per_row as usize == row_bytes {
        return frame.pixels().to_vec();
    }
    let mut out = Vec::with_capacity(row_bytes * m.height as usize);
    for row in frame.rows() {
        out.extend_from_slice(row);
    }
    out
}
