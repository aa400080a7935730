//! The viewer's upload thread: one long-lived thread that takes each incoming frame
//! (newest wins), copies it into a free mapped staging buffer of the ring
//! ([`Stager::stage`]) and hands the staged frame to the window, which only records its
//! `copy_buffer_to_texture` ([`super::UploadTexture::show`]). The frame-sized copy is
//! off the UI thread. While every buffer of the ring is on its way (the GPU or the
//! window behind), the thread polls the device without waiting, a millisecond apart,
//! and a newer frame replaces the one it holds; with every buffer staged and not taken,
//! it drops the oldest staged frame.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::upload::{epoch_us, StageCounters, Staged, Stager, UPLOAD_RING};
use super::{DisplayRange, GpuError};
use crate::frame::Frame;

/// A frame staged, or the frame that could not be and why.
pub type StageResult = Result<Staged, (Frame, GpuError)>;

/// How long the thread sleeps between polls while every staging buffer is on its way.
const RING_FULL_NAP: Duration = Duration::from_millis(1);
/// How often an idle thread looks whether it should stop.
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// The handle the window keeps; dropping it stops and joins the thread.
pub struct UploadThread {
    staged: flume::Receiver<StageResult>,
    again: flume::Sender<Frame>,
    range: Arc<Mutex<DisplayRange>>,
    counters: Arc<StageCounters>,
    /// Frames the thread took but replaced by a newer one before staging them.
    replaced: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl UploadThread {
    /// Starts the thread: it takes frames from `frames`, stages them on `device`, and
    /// calls `wake` after each staged frame (the window's repaint). `hook`, when given,
    /// runs on the thread before it weighs what came in and copies a frame (tests hold
    /// it up).
    pub fn spawn(
        device: wgpu::Device,
        frames: flume::Receiver<Frame>,
        wake: impl Fn() + Send + 'static,
        hook: Option<Box<dyn Fn() + Send>>,
    ) -> std::io::Result<UploadThread> {
        // Each staged frame holds a buffer of the ring, so the window never finds more
        // than a ring's worth waiting.
        let (staged_tx, staged) = flume::bounded(UPLOAD_RING);
        let (again, again_rx) = flume::bounded(1);
        let range = Arc::new(Mutex::new(DisplayRange::Auto));
        let stop = Arc::new(AtomicBool::new(false));
        let replaced = Arc::new(AtomicU64::new(0));
        let mut stager = Stager::new();
        let counters = stager.counters().clone();
        let handle = {
            let (range, stop, replaced) = (range.clone(), stop.clone(), replaced.clone());
            // The thread's own end of the staged queue, to drop its oldest frame.
            let stale = staged.clone();
            std::thread::Builder::new()
                .name("texstream upload".to_owned())
                .spawn(move || {
                    // The frame waiting to be staged, and when it was taken.
                    let mut pending: Option<(Frame, u64)> = None;
                    while !stop.load(Relaxed) {
                        if pending.is_none() {
                            let got = flume::Selector::new()
                                .recv(&again_rx, Result::ok)
                                .recv(&frames, Result::ok)
                                .wait_timeout(IDLE_WAKE);
                            match got {
                                Ok(Some(frame)) => pending = Some((frame, epoch_us())),
                                Ok(None) if frames.is_disconnected() => break,
                                Ok(None) => std::thread::sleep(IDLE_WAKE),
                                Err(_) => continue,
                            }
                        }
                        if let Some(hook) = &hook {
                            hook();
                        }
                        // Newest wins: a frame shown again, then the network's newer ones.
                        for frame in again_rx.try_iter().chain(frames.try_iter()) {
                            if pending.replace((frame, epoch_us())).is_some() {
                                replaced.fetch_add(1, Relaxed);
                            }
                        }
                        let Some((frame, taken_us)) = pending.take() else {
                            continue;
                        };
                        let range = *lock(&range);
                        let result = match stager.stage(&device, &frame, range) {
                            Ok(Some(mut staged)) => {
                                staged.set_taken_us(taken_us);
                                Ok(staged)
                            }
                            Ok(None) => {
                                // The ring is full: this frame waits (unless a newer
                                // one comes), and the device is polled again soon. A
                                // window that holds every buffer staged and is not
                                // taking them (hidden, or slower than the stream) gives
                                // back the oldest: newest wins here too.
                                if staged_tx.is_full() {
                                    if let Ok(oldest) = stale.try_recv() {
                                        drop(oldest);
                                        replaced.fetch_add(1, Relaxed);
                                    }
                                }
                                pending = Some((frame, taken_us));
                                std::thread::sleep(RING_FULL_NAP);
                                continue;
                            }
                            Err(e) => Err((frame, e)),
                        };
                        // A full queue means the window is behind: the staged frame is
                        // dropped (its buffer maps again), the window shows newer ones.
                        match staged_tx.try_send(result) {
                            Ok(()) => wake(),
                            Err(flume::TrySendError::Full(_)) => {
                                replaced.fetch_add(1, Relaxed);
                            }
                            Err(flume::TrySendError::Disconnected(_)) => break,
                        }
                    }
                })?
        };
        Ok(UploadThread {
            staged,
            again,
            range,
            counters,
            replaced,
            stop,
            handle: Some(handle),
        })
    }

    /// The newest staged frame, if any; older ones are dropped (their buffers go back
    /// to the ring) and counted in the second value. Never waits.
    pub fn take_newest(&self) -> (Option<StageResult>, u64) {
        let mut newest = None;
        let mut replaced = 0;
        for result in self.staged.try_iter() {
            if newest.replace(result).is_some() {
                replaced += 1;
            }
        }
        (newest, replaced)
    }

    /// Stages `frame` again (a new display range), unless a newer frame comes first.
    pub fn again(&self, frame: Frame) {
        let _ = self.again.try_send(frame);
    }

    /// How float frames are expanded from the next frame staged on.
    pub fn set_display_range(&self, range: DisplayRange) {
        *lock(&self.range) = range;
    }

    /// Buffers made, frames and bytes copied on the thread, frames left out busy.
    pub fn counters(&self) -> &StageCounters {
        &self.counters
    }

    /// Frames taken but replaced by newer ones before being staged or shown.
    pub fn replaced(&self) -> u64 {
        self.replaced.load(Relaxed)
    }
}

impl Drop for UploadThread {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
