//! The transfers panel on its own, through `egui_kittest` with a stand-in for the node
//! (no GPU, no network): every state reads in words, names from peers are escaped,
//! "Cancel" and "Clear finished" reach the node, "Open folder" runs the opener off the
//! UI thread with the received file's folder, the list is read a few times a second at
//! most, and the window keeps repainting only while a transfer is under way.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use texstream::app::transfers::{READ_EVERY, REPAINT_WHILE_ACTIVE};
use texstream::app::{FolderOpener, TransferControl, TransfersView};
use texstream::net::{Direction, PeerId, TransferId, TransferState, TransferStatus};

/// A node as far as the panel can tell: a list, and what the panel asked of it.
#[derive(Default)]
struct FakeNode {
    list: RefCell<Vec<TransferStatus>>,
    reads: RefCell<usize>,
    cancelled: RefCell<Vec<TransferId>>,
    cleared: RefCell<usize>,
}

impl TransferControl for FakeNode {
    fn transfers(&self) -> Vec<TransferStatus> {
        *self.reads.borrow_mut() += 1;
        self.list.borrow().clone()
    }

    fn cancel_transfer(&self, id: TransferId) {
        self.cancelled.borrow_mut().push(id);
    }

    fn clear_finished_transfers(&self) {
        *self.cleared.borrow_mut() += 1;
        self.list.borrow_mut().retain(|t| !t.state.finished());
    }
}

struct Panel {
    view: TransfersView,
    node: FakeNode,
}

fn harness(rows: Vec<TransferStatus>, opener: FolderOpener) -> Harness<'static, Panel> {
    let node = FakeNode::default();
    *node.list.borrow_mut() = rows;
    Harness::builder()
        .with_size([1100.0, 400.0])
        .build_ui_state(
            |ui, panel: &mut Panel| {
                panel.view.refresh(&panel.node, Instant::now());
                panel.view.transfers_ui(ui, &panel.node);
            },
            Panel {
                view: TransfersView::new(opener),
                node,
            },
        )
}

fn status(id: u64, direction: Direction, name: &str, state: TransferState) -> TransferStatus {
    TransferStatus {
        id: TransferId(id),
        direction,
        peer: PeerId(1),
        peer_name: "far side".to_owned(),
        name: name.to_owned(),
        size: 4_000_000,
        done_bytes: 1_000_000,
        bytes_per_sec: 0.0,
        time_left: None,
        state,
        path: None,
        resumes: 0,
    }
}

fn running(id: u64, direction: Direction, name: &str) -> TransferStatus {
    TransferStatus {
        bytes_per_sec: 2_000_000.0,
        time_left: Some(Duration::from_millis(1500)),
        ..status(id, direction, name, TransferState::Running)
    }
}

fn received(id: u64, path: &Path) -> TransferStatus {
    TransferStatus {
        done_bytes: 4_000_000,
        path: Some(path.to_owned()),
        ..status(
            id,
            Direction::Incoming,
            "photo.raw",
            TransferState::Done {
                message: "stored as photo.raw".to_owned(),
            },
        )
    }
}

fn never_opens() -> FolderOpener {
    FolderOpener::new(|dir| panic!("the panel opened {} unasked", dir.display()))
}

/// How long the window asked to wait before its next repaint.
fn repaint_delay(harness: &Harness<'static, Panel>) -> Duration {
    harness
        .output()
        .viewport_output
        .get(&egui::ViewportId::ROOT)
        .map_or(Duration::MAX, |v| v.repaint_delay)
}

#[test]
fn every_state_reads_in_words_and_names_from_peers_are_escaped() {
    let rows = vec![
        running(1, Direction::Outgoing, "report.pdf"),
        status(2, Direction::Outgoing, "later.bin", TransferState::Waiting),
        status(
            3,
            Direction::Incoming,
            "held.iso",
            TransferState::Paused {
                reason: "connection lost".to_owned(),
            },
        ),
        status(
            4,
            Direction::Incoming,
            "evil\u{202e}txt.exe",
            TransferState::Failed {
                reason: "cancelled by the sender: \u{1b}[31mno".to_owned(),
            },
        ),
        received(5, Path::new("/tmp/received/photo.raw")),
    ];
    let mut harness = harness(rows, never_opens());
    harness.run_steps(2);

    harness.get_by_label("Transfers");
    harness.get_by_label("3 under way, 2 finished");
    assert_eq!(harness.get_all_by_label("sending").count(), 2);
    assert_eq!(harness.get_all_by_label("receiving").count(), 3);
    assert_eq!(harness.get_all_by_label("from far side").count(), 3);
    harness.get_by_label("report.pdf");
    // Progress, speed and time left of the running one.
    harness.get_by_label("2.0 MB/s");
    harness.get_by_label("2 s left");
    harness.get_by_label("running");
    assert_eq!(harness.get_all_by_label("1.0 MB / 4.0 MB").count(), 4);
    harness.get_by_label("4.0 MB / 4.0 MB");
    harness.get_by_label("waiting");
    harness.get_by_label("paused: resumes when the peer is back");
    harness.get_by_label("done");
    // Text from peers cannot fake the interface: overrides and escapes are written out.
    harness.get_by_label("evil\\u{202e}txt.exe");
    harness.get_by_label("failed: cancelled by the sender: \\u{1b}[31mno");
    // Cancel on the three unfinished, Open folder on the one received.
    assert_eq!(harness.get_all_by_label("Cancel").count(), 3);
    assert_eq!(harness.get_all_by_label("Open folder").count(), 1);
    assert!(repaint_delay(&harness) <= REPAINT_WHILE_ACTIVE);
}

#[test]
fn cancel_and_clear_finished_reach_the_node() {
    let rows = vec![
        running(7, Direction::Incoming, "big.bin"),
        received(6, Path::new("/tmp/received/photo.raw")),
    ];
    let mut harness = harness(rows, never_opens());
    harness.run_steps(2);

    harness.get_by_label("Cancel").click();
    harness.run_steps(2);
    assert_eq!(
        *harness.state().node.cancelled.borrow(),
        vec![TransferId(7)]
    );
    // Until the node says it stopped, the row says so and cannot be cancelled twice.
    harness.get_by_label("cancelling…");

    harness.state().node.list.borrow_mut()[0].state = TransferState::Failed {
        reason: "cancelled by the receiver".to_owned(),
    };
    harness.state_mut().view.mark_changed();
    harness.run_steps(2);
    harness.get_by_label("failed: cancelled by the receiver");
    assert!(harness.query_by_label("Cancel").is_none());
    assert!(harness.query_by_label("cancelling…").is_none());

    harness.get_by_label("Clear finished").click();
    harness.run_steps(3);
    assert_eq!(*harness.state().node.cleared.borrow(), 1);
    assert!(harness.state().view.is_empty());
    assert!(harness.query_by_label("big.bin").is_none());
    // Nothing under way: no repaint timer of the panel's own.
    harness.run_steps(3);
    assert!(repaint_delay(&harness) > REPAINT_WHILE_ACTIVE);
}

#[test]
fn open_folder_runs_the_opener_off_the_ui_thread_with_the_files_folder() {
    let (tx, rx) = flume::bounded(4);
    let opener = FolderOpener::new(move |dir| {
        let thread = std::thread::current().name().map(str::to_owned);
        tx.send((dir.to_owned(), thread)).unwrap();
        Err("no file manager here".to_owned())
    });
    let file = PathBuf::from("/tmp/received/photo.raw");
    let mut harness = harness(vec![received(9, &file)], opener);
    harness.run_steps(2);
    harness.get_by_label("Open folder").click();
    harness.run_steps(1);

    let (dir, thread) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(dir, Path::new("/tmp/received"));
    assert_eq!(thread.as_deref(), Some("texstream open folder"));
    // The opener's failure is shown, not lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    while harness
        .query_by_label("cannot open /tmp/received: no file manager here")
        .is_none()
    {
        assert!(Instant::now() < deadline, "the opener's error never showed");
        harness.step();
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_list_is_read_a_few_times_a_second_or_when_something_changed() {
    let node = FakeNode::default();
    *node.list.borrow_mut() = vec![running(1, Direction::Outgoing, "a.bin")];
    let mut view = TransfersView::new(never_opens());
    let t0 = Instant::now();
    view.refresh(&node, t0);
    assert_eq!(*node.reads.borrow(), 1);
    for ms in [10, 50, 100, 150, 199] {
        view.refresh(&node, t0 + Duration::from_millis(ms));
    }
    assert_eq!(*node.reads.borrow(), 1, "read again before {READ_EVERY:?}");
    view.refresh(&node, t0 + READ_EVERY);
    assert_eq!(*node.reads.borrow(), 2);
    // A file event or a drop: read at once.
    node.list
        .borrow_mut()
        .push(running(2, Direction::Incoming, "b.bin"));
    view.mark_changed();
    view.refresh(&node, t0 + READ_EVERY + Duration::from_millis(1));
    assert_eq!(*node.reads.borrow(), 3);
    // Oldest first, whatever order the node gives.
    node.list.borrow_mut().reverse();
    view.mark_changed();
    view.refresh(&node, t0 + READ_EVERY + Duration::from_millis(2));
    let ids: Vec<u64> = view.rows().iter().map(|r| r.id.0).collect();
    assert_eq!(ids, vec![1, 2]);
    assert!(view.active());
}
