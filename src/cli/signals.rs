//! Unix signals for the headless commands: SIGINT/SIGTERM end cleanly, SIGUSR1 drops
//! all peers, SIGUSR2 prints the peer list. Delivered through a bounded channel so the
//! main loop handles them in its own time.

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlSignal {
    /// SIGINT or SIGTERM: say goodbye to peers and exit 0.
    Stop,
    /// SIGUSR1: drop every peer.
    DropPeers,
    /// SIGUSR2: print the peers with their addresses and states.
    ListPeers,
}

/// The installed handlers; receive from [`Signals::rx`].
pub struct Signals {
    pub rx: flume::Receiver<ControlSignal>,
    handle: signal_hook::iterator::Handle,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1, SIGUSR2])?;
        let handle = signals.handle();
        let (tx, rx) = flume::bounded(16);
        std::thread::Builder::new()
            .name("texstream signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    let what = match sig {
                        SIGUSR1 => ControlSignal::DropPeers,
                        SIGUSR2 => ControlSignal::ListPeers,
                        _ => ControlSignal::Stop,
                    };
                    // A full queue means the same requests are already pending.
                    let _ = tx.try_send(what);
                }
            })?;
        Ok(Signals { rx, handle })
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.handle.close();
    }
}
