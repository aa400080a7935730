//! A link writer's frame coder: codes the frames of one link with
//! [`crate::protocol::tiles`] (a delta against the last frame the link sent, changed
//! tiles compressed), outside the link's lock, into a buffer it keeps and reuses, so
//! that nothing is allocated per frame once it has grown to the largest coding.

use std::sync::Arc;

use super::tx::CodeJob;
use crate::frame::Frame;
use crate::protocol::tiles::{TileEncoder, TileError, TileGrid};

/// What coding one frame gave.
pub(crate) struct Coded {
    pub frame: Frame,
    /// The frame the coding is a delta against, if it is one.
    pub base_seq: Option<u64>,
    pub bytes: Arc<Vec<u8>>,
}

#[derive(Default)]
pub(crate) struct Coder {
    encoder: TileEncoder,
    /// The coded bytes of the last frame; the wire holds a handle while it sends them.
    buf: Arc<Vec<u8>>,
}

impl Coder {
    /// Codes `job`'s frame; on an error (a geometry the tiles cannot cut), gives the
    /// frame back to go raw.
    pub fn code(&mut self, job: CodeJob) -> Result<Coded, (Frame, TileError)> {
        let meta = *job.frame.meta();
        let Some(grid) = TileGrid::new(
            meta.bytes_per_row,
            meta.height,
            meta.format.bytes_per_pixel(),
        ) else {
            return Err((job.frame, TileError::Geometry("no tile grid for the frame")));
        };
        // The wire lets go of the last coding before the next frame is taken, so the
        // buffer is ours again; a fresh one only if it is not (never in steady state).
        if Arc::get_mut(&mut self.buf).is_none() {
            self.buf = Arc::default();
        }
        let Some(out) = Arc::get_mut(&mut self.buf) else {
            return Err((job.frame, TileError::Geometry("coding buffer shared")));
        };
        out.clear();
        let base = job.base.as_ref().map(|b| b.pixels());
        match self
            .encoder
            .encode(&grid, job.frame.pixels(), base, job.compression, out)
        {
            Ok(_) => Ok(Coded {
                base_seq: job.base.as_ref().map(|b| b.meta().seq),
                frame: job.frame,
                bytes: self.buf.clone(),
            }),
            Err(e) => Err((job.frame, e)),
        }
    }
}

/// Probe the other choice after this many frames at first, doubling (to
/// [`PROBE_MOST`]) each time the probe confirms the choice.
const PROBE_FIRST: u32 = 32;
const PROBE_MOST: u32 = 512;
/// Weight of a new frame in a choice's running cost.
const COST_WEIGHT: f64 = 0.3;
/// The choice in use is dropped once it costs this much more than the other's last
/// measure.
const SWITCH_ABOVE: f64 = 1.25;

/// `--codec auto` on one link: codes frames or sends them raw, whichever costs this
/// link less per frame, as measured on it: the writer's time for a frame, coding and
/// sending it (so a link faster than the coder gets raw frames, a slow one coded ones),
/// per byte of raw frame. Pure: the writer reports each frame's cost
/// ([`AutoCoding::on_frame`]); now and then one frame goes the other way, to measure it
/// again (more seldom while it keeps losing).
#[derive(Clone, Debug)]
pub(crate) struct AutoCoding {
    coding: bool,
    /// Microseconds per raw byte, raw (`[0]`) and coded (`[1]`).
    cost: [Option<f64>; 2],
    since_probe: u32,
    probe_every: u32,
    /// The frame on the wire measures the choice not in use.
    probing: bool,
}

impl Default for AutoCoding {
    fn default() -> Self {
        AutoCoding {
            coding: false,
            cost: [None, None],
            since_probe: 0,
            probe_every: PROBE_FIRST,
            probing: false,
        }
    }
}

impl AutoCoding {
    /// Whether the next frame goes coded (changes nothing; [`AutoCoding::taken`] does).
    pub fn codes_next(&self) -> bool {
        if self.probe_due() {
            !self.coding
        } else {
            self.coding
        }
    }

    fn probe_due(&self) -> bool {
        self.cost[usize::from(!self.coding)].is_none() || self.since_probe >= self.probe_every
    }

    /// The next frame was taken for the wire, as [`AutoCoding::codes_next`] said.
    pub fn taken(&mut self) {
        if self.probe_due() {
            self.probing = true;
            self.since_probe = 0;
        } else {
            self.since_probe += 1;
        }
    }

    /// A frame of `raw_len` bytes went out, coded or not, and cost the writer `cost_us`.
    pub fn on_frame(&mut self, coded: bool, raw_len: usize, cost_us: u64) {
        let per_byte = cost_us as f64 / raw_len.max(1) as f64;
        let probe = std::mem::take(&mut self.probing);
        let slot = &mut self.cost[usize::from(coded)];
        *slot = Some(match *slot {
            // A probe's measure replaces one that is old by now.
            Some(old) if !probe => old + COST_WEIGHT * (per_byte - old),
            _ => per_byte,
        });
        let (Some(raw), Some(code)) = (self.cost[0], self.cost[1]) else {
            return;
        };
        let (ours, theirs) = if self.coding {
            (code, raw)
        } else {
            (raw, code)
        };
        if probe {
            if theirs < ours {
                self.coding = !self.coding;
                self.probe_every = PROBE_FIRST;
            } else {
                self.probe_every = (self.probe_every * 2).min(PROBE_MOST);
            }
        } else if ours > theirs * SWITCH_ABOVE {
            self.coding = !self.coding;
            self.since_probe = 0;
            self.probe_every = PROBE_FIRST;
        }
    }

    /// Whether frames go coded now (what the link shows).
    pub fn coding(&self) -> bool {
        self.coding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `frames` frames through `auto` on a link where a raw frame costs `raw_us`
    /// and a coded one `coded_us`; returns how many went coded.
    fn run(auto: &mut AutoCoding, frames: u32, raw_us: u64, coded_us: u64) -> u32 {
        let mut coded = 0;
        for _ in 0..frames {
            let code = auto.codes_next();
            auto.taken();
            auto.on_frame(code, 1000, if code { coded_us } else { raw_us });
            coded += u32::from(code);
        }
        coded
    }

    #[test]
    fn the_cheaper_way_wins_and_the_other_is_measured_again_seldom() {
        // A slow link: raw frames cost 20x coded ones.
        let mut auto = AutoCoding::default();
        let coded = run(&mut auto, 1000, 66_000, 3_000);
        assert!(auto.coding());
        // All but the first frame and a few probes, each further apart.
        assert!(coded >= 990, "{coded} of 1000 coded");
        // A fast link: coding costs 10x sending raw (photographs on loopback).
        let mut auto = AutoCoding::default();
        let coded = run(&mut auto, 1000, 2_300, 25_000);
        assert!(!auto.coding());
        assert!(coded <= 10, "{coded} of 1000 coded");
    }

    #[test]
    fn a_change_of_content_or_link_is_followed() {
        let mut auto = AutoCoding::default();
        run(&mut auto, 600, 2_300, 25_000);
        assert!(!auto.coding());
        // The content becomes a screen: coding it is now cheaper than sending it raw.
        // Found at the next probe, at most PROBE_MOST frames later.
        run(&mut auto, PROBE_MOST + 1, 2_300, 1_500);
        assert!(auto.coding());
        // The link slows down while coding: coded frames still win.
        run(&mut auto, 100, 66_000, 4_000);
        assert!(auto.coding());
        // Coding gets dear (photographs) on a fast link: raw again, without waiting
        // for a probe, once the running cost passes raw's by the margin.
        let coded = run(&mut auto, 10, 2_300, 25_000);
        assert!(!auto.coding());
        assert!(coded < 10, "{coded}");
    }

    #[test]
    fn costs_that_are_close_do_not_flap() {
        let mut auto = AutoCoding::default();
        let mut switches = 0;
        let mut last = auto.coding();
        for i in 0..2000u64 {
            let code = auto.codes_next();
            auto.taken();
            // Within 10 % of each other, noisy.
            let cost = if code {
                1_000 + i * 7919 % 100
            } else {
                1_050 + i * 104_729 % 100
            };
            auto.on_frame(code, 1000, cost);
            if auto.coding() != last {
                switches += 1;
                last = auto.coding();
            }
        }
        assert!(switches <= 10, "{switches} switches");
    }
}
