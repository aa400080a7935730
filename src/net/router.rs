//! Where frames and texts go, as pure rules over a passed-in clock: which peer's stream a
//! node follows, which peers a frame is offered to, which a text is passed on to. The
//! node applies them over its live peer list (`node.rs`); nothing here touches a link.

use std::time::{Duration, Instant};

use super::status::PeerId;
use crate::frame::PixelFormat;

/// How long the followed source may send nothing before another one's frames are
/// taken instead.
pub const SOURCE_IDLE: Duration = Duration::from_secs(2);

/// The one stream a node follows, so that frames of two sources never mix: the first
/// peer to send a frame is followed while it keeps sending; another takes over only
/// once that one has sent nothing for [`SOURCE_IDLE`] or its connection ended. A peer
/// chosen with [`Follow::choose`] is followed alone, however the others send, until
/// its connection ends.
#[derive(Debug, Default)]
pub(crate) struct Follow {
    source: Option<(PeerId, Instant)>,
    chosen: Option<PeerId>,
}

/// What [`Follow::on_frame`] decided about a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameFrom {
    /// The followed stream's: deliver it (and relay it).
    Followed,
    /// A new stream is followed from this frame on.
    NewSource,
    /// Another peer's, while the followed one is live: left out.
    Other,
}

impl Follow {
    /// A frame from `from` arrived at `now`.
    pub fn on_frame(&mut self, from: PeerId, now: Instant) -> FrameFrom {
        if self.chosen.is_some_and(|chosen| chosen != from) {
            return FrameFrom::Other;
        }
        match self.source {
            Some((id, last)) if id != from && now.saturating_duration_since(last) < SOURCE_IDLE => {
                FrameFrom::Other
            }
            Some((id, _)) if id == from => {
                self.source = Some((from, now));
                FrameFrom::Followed
            }
            _ => {
                self.source = Some((from, now));
                FrameFrom::NewSource
            }
        }
    }

    /// Follows `peer` alone from its next frame on (`None`: back to the first that
    /// sends); the stream followed until then is dropped at once.
    pub fn choose(&mut self, peer: Option<PeerId>) {
        self.chosen = peer;
        if peer.is_some_and(|p| self.source() != Some(p)) {
            self.source = None;
        }
    }

    /// The peer chosen with [`Follow::choose`], while its connection lasts.
    pub fn chosen(&self) -> Option<PeerId> {
        self.chosen
    }

    /// `peer`'s connection ended: if its stream was followed, the next source may take
    /// over at once; if it was chosen, the choice ends with it.
    pub fn gone(&mut self, peer: PeerId) {
        if self.source.is_some_and(|(id, _)| id == peer) {
            self.source = None;
        }
        if self.chosen == Some(peer) {
            self.chosen = None;
        }
    }

    /// The peer followed now, if any.
    pub fn source(&self) -> Option<PeerId> {
        self.source.map(|(id, _)| id)
    }
}

/// What the router needs to know of a peer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route {
    pub id: PeerId,
    /// The peer's hello asked for frames.
    pub wants_frames: bool,
    /// The peer has sent us a frame: it is a source (an upstream), and frames never go
    /// back to it. (Not the hello's `FRAMES_OUT`: a relay announces both directions, and
    /// a relay downstream of another must still get its frames.)
    pub sends_frames: bool,
    /// The peer's hello said it takes text.
    pub takes_text: bool,
    /// The peer's hello said it takes every pixel format (`FORMATS`).
    pub takes_all_formats: bool,
}

/// Whether a published frame is offered to `peer`.
pub(crate) fn frame_goes_to(peer: &Route) -> bool {
    peer.wants_frames && !peer.sends_frames
}

/// Whether a frame of `format` may go to `peer` (one [`frame_goes_to`] offers frames
/// to): RGBA8 and BGRA8 to every peer, the other formats only to a peer whose hello has
/// `FORMATS`, since an older peer refuses their codes and would end the link.
pub(crate) fn format_goes_to(peer: &Route, format: PixelFormat) -> bool {
    peer.takes_all_formats || !format.needs_formats_capability()
}

/// Whether a text from `origin` (`None`: this node's own) goes to `peer`: every peer
/// that takes text, never back to the one it came from.
pub(crate) fn text_goes_to(peer: &Route, origin: Option<PeerId>) -> bool {
    peer.takes_text && Some(peer.id) != origin
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerId = PeerId(1);
    const B: PeerId = PeerId(2);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_stream_is_followed_until_it_goes_quiet_or_away() {
        let t0 = Instant::now();
        let mut f = Follow::default();
        assert_eq!(f.on_frame(A, t0), FrameFrom::NewSource);
        assert_eq!(f.on_frame(B, t0 + MS), FrameFrom::Other);
        // A keeps sending: B stays out, however long it tries.
        for i in 1..=10 {
            let t = t0 + i * SOURCE_IDLE / 2;
            assert_eq!(f.on_frame(A, t), FrameFrom::Followed);
            assert_eq!(f.on_frame(B, t + MS), FrameFrom::Other);
        }
        // A goes quiet: B takes over exactly at the idle limit, and A is the other now.
        let last_a = t0 + 5 * SOURCE_IDLE;
        assert_eq!(f.on_frame(B, last_a + SOURCE_IDLE - MS), FrameFrom::Other);
        assert_eq!(f.on_frame(B, last_a + SOURCE_IDLE), FrameFrom::NewSource);
        assert_eq!(f.on_frame(A, last_a + SOURCE_IDLE + MS), FrameFrom::Other);
        assert_eq!(f.source(), Some(B));
        // B's connection ends: A is taken at once.
        f.gone(A);
        assert_eq!(f.source(), Some(B), "only the followed one's end matters");
        f.gone(B);
        assert_eq!(f.source(), None);
        assert_eq!(
            f.on_frame(A, last_a + SOURCE_IDLE + 2 * MS),
            FrameFrom::NewSource
        );
    }

    #[test]
    fn a_chosen_stream_is_followed_alone_until_its_connection_ends() {
        let t0 = Instant::now();
        let mut f = Follow::default();
        assert_eq!(f.on_frame(A, t0), FrameFrom::NewSource);
        // B is chosen while A is live: A is left out from now on, B taken at once.
        f.choose(Some(B));
        assert_eq!(f.source(), None, "A's stream is dropped at once");
        assert_eq!(f.on_frame(A, t0 + MS), FrameFrom::Other);
        assert_eq!(f.on_frame(B, t0 + 2 * MS), FrameFrom::NewSource);
        // B going quiet does not let A back in: the choice is not automatic.
        let later = t0 + 10 * SOURCE_IDLE;
        assert_eq!(f.on_frame(A, later), FrameFrom::Other);
        assert_eq!(f.on_frame(B, later + MS), FrameFrom::Followed);
        // Choosing the one followed keeps it followed.
        f.choose(Some(B));
        assert_eq!(f.on_frame(B, later + 2 * MS), FrameFrom::Followed);
        // Another's end changes nothing; B's ends the choice, and A is taken.
        f.gone(A);
        assert_eq!(f.chosen(), Some(B));
        f.gone(B);
        assert_eq!(f.chosen(), None);
        assert_eq!(f.on_frame(A, later + 3 * MS), FrameFrom::NewSource);
        // Back to automatic by choice too.
        f.choose(Some(B));
        assert_eq!(f.on_frame(A, later + 4 * MS), FrameFrom::Other);
        f.choose(None);
        assert_eq!(f.on_frame(A, later + 5 * MS), FrameFrom::NewSource);
    }

    #[test]
    fn frames_never_echo_to_a_source_and_texts_never_to_their_origin() {
        let viewer = Route {
            id: A,
            wants_frames: true,
            sends_frames: false,
            takes_text: true,
            takes_all_formats: true,
        };
        let upstream = Route {
            id: B,
            wants_frames: true,
            sends_frames: true,
            takes_text: true,
            takes_all_formats: true,
        };
        let mute = Route {
            id: PeerId(3),
            wants_frames: false,
            sends_frames: false,
            takes_text: false,
            takes_all_formats: false,
        };
        assert!(frame_goes_to(&viewer));
        assert!(!frame_goes_to(&upstream), "no echo to a source");
        assert!(!frame_goes_to(&mute));
        assert!(text_goes_to(&viewer, Some(B)));
        assert!(!text_goes_to(&upstream, Some(B)), "not back to its origin");
        assert!(
            text_goes_to(&upstream, None),
            "our own text goes to everyone"
        );
        assert!(!text_goes_to(&mute, None));
    }

    #[test]
    fn formats_past_rgba8_and_bgra8_go_only_to_peers_that_take_them() {
        let route = |takes_all_formats| Route {
            id: A,
            wants_frames: true,
            sends_frames: false,
            takes_text: true,
            takes_all_formats,
        };
        for format in PixelFormat::ALL {
            assert!(format_goes_to(&route(true), format), "{format}");
            let old_peer_takes = matches!(format, PixelFormat::Rgba8 | PixelFormat::Bgra8);
            assert_eq!(
                format_goes_to(&route(false), format),
                old_peer_takes,
                "{format}"
            );
        }
    }
}
