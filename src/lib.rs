//! texstream streams raw RGBA frames (GPU textures read back) from a sender to any number
//! of viewers over TCP, with text and files on the same connection.
//!
//! Modules, each depending only on those above it:
//! - [`frame`]: frames (pixels + geometry) shared by `Arc`, in recycled buffers.
//! - [`export`]: a frame as a lossless file (PNG for 8-bit formats, `.npy` for floats).
//! - [`protocol`]: the wire protocol as pure code: bytes ↔ messages, frame reassembly.
//!   No sockets, threads or clock.
//! - [`net`]: sockets, threads and bounded flume channels: the [`net::Node`] that serves
//!   or dials peers, reconnects with backoff, keeps links alive, shares frames between
//!   peers and delivers only whole, verified frames.
//! - [`meter`]: rolling fps, throughput and latency figures for display.
//! - [`gpu`]: wgpu only: headless device, row padding, pipelined readback into frames,
//!   the persistent upload texture, the WGSL live source (`shaders/`).
//! - [`source`]: frame producers for the headless sender (image files, folders,
//!   animations, a generated test pattern).
//! - [`app`]: the sender and viewer windows (eframe/egui on wgpu) and their panels.
//! - [`cli`]: the `texstream` command line's subcommands.

pub mod app;
pub mod cli;
pub mod export;
pub mod frame;
pub mod gpu;
pub mod meter;
pub mod net;
pub mod protocol;
pub mod source;
