//! Arrays ↔ frames: which numpy arrays `send` puts on the wire in which pixel format,
//! and the array a received frame becomes. A new wire format is one more row in
//! [`LAYOUTS`].

use numpy::{PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn};
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use texstream::frame::{Frame, FrameGeometry, PixelFormat};
use texstream::protocol::Limits;

/// One array layout and the wire format it travels as.
struct Layout {
    format: PixelFormat,
    /// numpy's dtype kind (`u` unsigned, `f` float) and bytes per channel.
    kind: u8,
    itemsize: usize,
    /// The array's last axis; `None`: a 2-D (height, width) array, one channel.
    channels: Option<usize>,
}

const fn layout(format: PixelFormat, kind: u8, itemsize: usize, channels: Option<usize>) -> Layout {
    Layout {
        format,
        kind,
        itemsize,
        channels,
    }
}

/// What `send` takes. The first row of each format is also the shape `recv` gives back
/// (so a (height, width, 1) array comes back as (height, width)). BGRA8 is sent only
/// by GPU senders; it comes back as (height, width, 4) uint8, `Frame.format` "bgra8".
const LAYOUTS: &[Layout] = &[
    layout(PixelFormat::R8, b'u', 1, None),
    layout(PixelFormat::R8, b'u', 1, Some(1)),
    layout(PixelFormat::Rgb8, b'u', 1, Some(3)),
    layout(PixelFormat::Rgba8, b'u', 1, Some(4)),
    layout(PixelFormat::R32F, b'f', 4, None),
    layout(PixelFormat::R32F, b'f', 4, Some(1)),
    layout(PixelFormat::Rgb32F, b'f', 4, Some(3)),
    layout(PixelFormat::Rgba32F, b'f', 4, Some(4)),
    layout(PixelFormat::Rgba16F, b'f', 2, Some(4)),
];

/// What `send` accepts, for the error that names it.
pub const ACCEPTED: &str = "a C-contiguous numpy array of shape (height, width) or \
    (height, width, channels): uint8 or float32 with 1, 3 or 4 channels, or float16 with 4";

/// An array `send` takes: the geometry of its frame, and its bytes borrowed for
/// reading while they are copied.
pub struct Sendable<'py> {
    pub geometry: FrameGeometry,
    pub bytes: PyReadonlyArrayDyn<'py, u8>,
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
    if !(2..=3).contains(&shape.len()) {
        return Err(format!(
            "expected {ACCEPTED}; got {what} ({}-D, not 2-D or 3-D)",
            shape.len()
        ));
    }
    let channels = shape.get(2).copied();
    let layout = LAYOUTS.iter().find(|l| {
        l.kind == dtype.kind() && l.itemsize == dtype.itemsize() && l.channels == channels
    });
    let Some(layout) = layout else {
        return Err(format!("expected {ACCEPTED}; got {what}"));
    };
    let native = dtype
        .getattr("isnative")
        .and_then(|n| n.extract::<bool>())
        .unwrap_or(false);
    if !native {
        return Err(format!(
            "expected {ACCEPTED} in this machine's byte order; got {what} \
             (array.astype(array.dtype.newbyteorder('=')) converts it)"
        ));
    }
    let (height, width) = (shape[0], shape[1]);
    if height == 0 || width == 0 {
        return Err(format!("expected {ACCEPTED}; got {what}, which is empty"));
    }
    let limits = Limits::default();
    let max = limits.max_dimension as usize;
    if height > max || width > max {
        return Err(format!(
            "expected {ACCEPTED} of at most {max}x{max} pixels; got {what}"
        ));
    }
    // Both at most 16384 (checked above): a row of at most 16 bytes a pixel fits in
    // u32, and the frame in u64.
    let bytes_per_row = width as u32 * layout.format.bytes_per_pixel();
    let frame_bytes = u64::from(bytes_per_row) * height as u64;
    if frame_bytes > limits.max_frame_bytes {
        return Err(format!(
            "expected {ACCEPTED} of at most {} bytes (a receiver's frame limit); got {what}, \
             {frame_bytes} bytes",
            limits.max_frame_bytes
        ));
    }
    if !array.is_c_contiguous() {
        return Err(format!(
            "expected {ACCEPTED}; got {what} that is not C-contiguous \
             (numpy.ascontiguousarray makes a contiguous copy)"
        ));
    }
    // The array's own bytes, as a uint8 view of them (no copy): one row of `LAYOUTS`
    // for every dtype, and `Frame::copied` takes bytes.
    let bytes = obj
        .call_method1("view", ("u1",))
        .and_then(|view| Ok(view.cast_into::<PyArrayDyn<u8>>()?))
        .map_err(|e| format!("the array's bytes cannot be read: {e}"))?;
    let bytes = bytes
        .try_readonly()
        .map_err(|e| format!("the array cannot be read now: {e}"))?;
    Ok(Sendable {
        geometry: FrameGeometry {
            width: width as u32,
            height: height as u32,
            format: layout.format,
            bytes_per_row,
        },
        bytes,
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

/// A received frame as a new array of the shape and dtype it was sent as ([`LAYOUTS`]):
/// the frame's one copy on this side, made without the GIL, dropping any row padding.
/// The array is the caller's to keep and write; the frame's buffer goes back to the
/// node's pool.
pub fn frame_array<'py>(py: Python<'py>, frame: Frame) -> PyResult<Bound<'py, PyAny>> {
    let m = *frame.meta();
    let (height, width) = (m.height as usize, m.width as usize);
    let pixels = py.detach(move || frame.tight_pixels());
    let bytes = PyArray1::from_vec(py, pixels);
    let (dtype, channels) = match m.format {
        PixelFormat::Rgba8 | PixelFormat::Bgra8 => ("u1", Some(4)),
        PixelFormat::R8 => ("u1", None),
        PixelFormat::Rgb8 => ("u1", Some(3)),
        PixelFormat::R32F => ("<f4", None),
        PixelFormat::Rgb32F => ("<f4", Some(3)),
        PixelFormat::Rgba32F => ("<f4", Some(4)),
        PixelFormat::Rgba16F => ("<f2", Some(4)),
    };
    // A view of the bytes as the format's dtype, then its shape: no copy.
    let typed = bytes.call_method1("view", (dtype,))?;
    match channels {
        Some(c) => typed.call_method1("reshape", ((height, width, c),)),
        None => typed.call_method1("reshape", ((height, width),)),
    }
}
