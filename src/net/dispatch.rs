//! What a link does with each thing its peer sent, written once: for the link's reader
//! thread ([`super::link`]) and for the in-memory [`Pair`](super::pair) alike, so the
//! tests on a mocked clock run the same decisions as a real connection. Everything
//! beyond the pure state goes through [`LinkEffects`]: the node's delivery of frames and
//! texts, the link's disk worker, its counters and clock.

use super::disk::DiskJob;
use super::files::OutgoingFile;
use super::rx::RxEvent;
use super::tx::{AcceptOutcome, TxConn};
use crate::frame::Frame;
use crate::protocol::{GoodbyeCode, Message, Pong, ProtocolError, Text};

/// What handling a received event may do outside the link's pure state.
pub(crate) trait LinkEffects {
    /// Runs `f` on the link's sending state (behind the link's lock, waking its
    /// writer, in a real link).
    fn tx<R>(&mut self, f: impl FnOnce(&mut TxConn) -> R) -> R;
    /// Queues a small message; `false` if the peer is too far behind to take it (the
    /// message is dropped: keepalive or the write timeout ends such a link).
    fn send(&mut self, msg: &Message) -> bool {
        self.tx(|tx| tx.send(msg))
    }
    /// A whole, verified frame arrived.
    fn frame(&mut self, frame: Frame);
    /// A text arrived.
    fn text(&mut self, text: Text);
    /// A file message for the link's disk worker; an error if the peer broke the file
    /// window.
    fn disk(&mut self, job: DiskJob) -> Result<(), ProtocolError>;
    /// A pong measured the round trip.
    fn rtt(&mut self, us: u64);
    /// The peer's verdict on a file we sent, `file`'s transfer already finished.
    fn file_sent(&mut self, file: OutgoingFile, ok: bool, message: String);
    /// Microseconds on the link's clock, the one its pings carry.
    fn elapsed_us(&self) -> u64;
    /// Microseconds for the `sent_us` of a pong (the wall clock, in a real link).
    fn pong_sent_us(&self) -> u64 {
        self.elapsed_us()
    }
    /// `bytes` arrived from the peer.
    fn received(&mut self, _bytes: usize) {}
    /// Called before each read: the chance to act on what changed outside the link
    /// (a real link hands the application's cancels to its disk worker).
    fn before_read(&mut self) -> Result<(), ProtocolError> {
        Ok(())
    }
}

/// Acts on what the received bytes completed. `Some` when the peer said goodbye (its
/// code and reason); an error when the peer broke the protocol.
pub(crate) fn on_event(
    event: RxEvent,
    out: &mut impl LinkEffects,
) -> Result<Option<(GoodbyeCode, String)>, ProtocolError> {
    let message = match event {
        RxEvent::Frame(frame) => {
            out.frame(frame);
            return Ok(None);
        }
        RxEvent::FileData {
            id,
            offset,
            data,
            len,
        } => {
            out.disk(DiskJob::Data {
                id,
                offset,
                data,
                len,
            })?;
            return Ok(None);
        }
        RxEvent::Message(m) => m,
    };
    match message {
        Message::Goodbye { code, reason } => return Ok(Some((code, reason))),
        Message::Ping(p) => {
            let pong = Message::Pong(Pong {
                nonce: p.nonce,
                ping_sent_us: p.sent_us,
                sent_us: out.pong_sent_us(),
            });
            if !out.send(&pong) {
                tracing::debug!("the peer is not reading: a pong was dropped");
            }
        }
        Message::Pong(p) => {
            let rtt = out.elapsed_us().saturating_sub(p.ping_sent_us).max(1);
            out.rtt(rtt);
        }
        Message::Text(text) => out.text(text),
        Message::FileOffer(offer) => out.disk(DiskJob::Offer(offer))?,
        Message::FileAccept(accept) => {
            // Only an offered file starts streaming: a repeated, late or unknown accept
            // changes nothing (and starts nothing).
            let outcome = out.tx(|tx| tx.on_accept(accept.id, accept.offset));
            if outcome == AcceptOutcome::Ignored {
                tracing::debug!(id = accept.id, "an accept for no offered file, ignored");
            }
        }
        Message::FileEnd(end) => out.disk(DiskJob::End(end))?,
        Message::FileCancel(cancel) => out.disk(DiskJob::Cancel(cancel))?,
        Message::FileProgress(p) => out.tx(|tx| tx.on_progress(p.id, p.written)),
        Message::FileResult(result) => {
            // A verdict on no file of ours (repeated, late, unknown) is ignored.
            if let Some(file) = out.tx(|tx| tx.on_result(result.id)) {
                if result.ok {
                    file.transfer.finish_ok(&result.message, None);
                } else {
                    file.transfer.finish_failed(&result.message);
                }
                out.file_sent(file, result.ok, result.message);
            }
        }
        // RxConn keeps these to itself.
        Message::FrameStart(_)
        | Message::CodedFrameStart(_)
        | Message::FrameAbort { .. }
        | Message::Hello(_)
        | Message::Auth { .. }
        | Message::FrameChunk { .. }
        | Message::FileChunk { .. } => {}
    }
    Ok(None)
}
