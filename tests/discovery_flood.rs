//! Hostile announcements on the LAN, sent as hand-made mDNS responses (multicast on
//! loopback): bogus addresses and ports are ignored, huge TXT records are cut to their
//! bounds, and thousands of sources fill a browser's table to its limit and no further,
//! while a real source heard first stays listed and `texstream list` still answers in
//! time, and a viewer window keeps making passes and lists no more than the bound. In a
//! test binary of its own: the flood would crowd other tests' sources out.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::proc::bin;
use texstream::net::discovery::{Browser, Found, MAX_NAME_BYTES, MAX_SOURCES, SERVICE_TYPE};

const MDNS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)), 5353);

/// A DNS name, uncompressed.
fn put_name(out: &mut Vec<u8>, name: &str) {
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// One resource record of class IN (with the cache-flush bit unless `shared`).
fn put_record(out: &mut Vec<u8>, name: &str, rtype: u16, shared: bool, rdata: &[u8]) {
    put_name(out, name);
    out.extend_from_slice(&rtype.to_be_bytes());
    let class: u16 = if shared { 1 } else { 0x8001 };
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&120u32.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// An unsolicited mDNS response announcing `instance` of our service type: PTR, SRV
/// (`port`, on `host`), TXT (`txt`: strings as given) and an A record (`ip`).
fn announcement(instance: &str, host: &str, port: u16, ip: Ipv4Addr, txt: &[Vec<u8>]) -> Vec<u8> {
    let full = format!("{instance}.{SERVICE_TYPE}");
    let mut out = vec![0, 0, 0x84, 0, 0, 0, 0, 4, 0, 0, 0, 0];
    let mut ptr = Vec::new();
    put_name(&mut ptr, &full);
    put_record(&mut out, SERVICE_TYPE, 12, true, &ptr);
    let mut srv = vec![0, 0, 0, 0];
    srv.extend_from_slice(&port.to_be_bytes());
    put_name(&mut srv, host);
    put_record(&mut out, &full, 33, false, &srv);
    let mut rdata = Vec::new();
    for s in txt {
        rdata.push(s.len() as u8);
        rdata.extend_from_slice(s);
    }
    put_record(&mut out, &full, 16, false, &rdata);
    put_record(&mut out, host, 1, false, &ip.octets());
    out
}

/// A socket that sends multicast out of the loopback interface.
fn loopback_multicast() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    rustix::net::sockopt::set_ip_multicast_if(&socket, &Ipv4Addr::LOCALHOST).unwrap();
    rustix::net::sockopt::set_ip_multicast_loop(&socket, true).unwrap();
    socket
}

/// TXT strings as large as one string may be (255 bytes), `keys` of them.
fn huge_txt(keys: usize, i: usize) -> Vec<Vec<u8>> {
    let mut txt = vec![format!("name={}", "N".repeat(250)).into_bytes()];
    txt.push(b"role=sender".to_vec());
    txt.push(format!("id={i:016x}").into_bytes());
    for k in 0..keys {
        let key = format!("k{k}=");
        let mut s = key.into_bytes();
        s.resize(255, b'v');
        txt.push(s);
    }
    txt
}

fn flood(socket: &UdpSocket, round: usize, count: usize) {
    for i in 0..count {
        let n = round * 100_000 + i;
        // Valid-looking, each with a TXT record of about 5 KB.
        let packet = announcement(
            &format!("flood {n}"),
            &format!("flood-host-{n}.local."),
            9,
            Ipv4Addr::new(127, 0, 0, 2),
            &huge_txt(20, n),
        );
        let _ = socket.send_to(&packet, MDNS);
    }
}

type Window = egui_kittest::Harness<'static, texstream::app::viewer::ViewerApp>;

/// A viewer window with its source panel, when a GPU adapter exists (lavapipe in CI);
/// `None` with a message otherwise, a failure under TEXSTREAM_REQUIRE_GPU=1.
fn viewer_window() -> Option<Window> {
    if let Err(e) = texstream::gpu::Gpu::headless() {
        if std::env::var("TEXSTREAM_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("TEXSTREAM_REQUIRE_GPU=1 but no GPU: {e}");
        }
        eprintln!("the window part skipped, no GPU adapter: {e}");
        return None;
    }
    let config = texstream::net::NodeConfig::new(texstream::protocol::Role::Viewer);
    let dir = std::env::temp_dir();
    Some(
        egui_kittest::Harness::builder()
            .with_size(egui::vec2(1280.0, 800.0))
            .wgpu()
            .build_eframe(move |cc| {
                texstream::app::viewer::ViewerApp::new(cc, config, dir).expect("the viewer")
            }),
    )
}

/// Polls the browser for `how_long`, stepping the window (if any) between polls;
/// returns the window's passes.
fn poll_for(browser: &mut Browser, window: &mut Option<Window>, how_long: Duration) -> u32 {
    let end = Instant::now() + how_long;
    let mut passes = 0;
    while Instant::now() < end {
        browser.wait(Duration::from_millis(50));
        if let Some(w) = window.as_mut() {
            w.step();
            passes += 1;
        }
    }
    passes
}

#[test]
fn hostile_announcements_are_ignored_or_bounded_and_a_real_source_stays_listed() {
    let mut browser = Browser::start().unwrap();
    let mut window = viewer_window();
    // A real source, heard before the flood.
    let real_name = format!("real before the flood {}", std::process::id());
    let mut config = texstream::net::NodeConfig::new(texstream::protocol::Role::Sender);
    config.listen = Some("127.0.0.1:0".to_owned());
    let node = texstream::net::Node::start(config).unwrap();
    let (_announced, _) = texstream::net::discovery::announce(&node, Some(&real_name), None, None)
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !browser.sources().iter().any(|f| f.name == real_name) {
        assert!(Instant::now() < deadline, "the real source is heard");
        browser.wait(Duration::from_millis(50));
    }

    // Bogus addresses and ports: not one is listed.
    let socket = loopback_multicast();
    let tag = std::process::id();
    let bogus: [(&str, u16, Ipv4Addr); 4] = [
        ("unspecified", 7878, Ipv4Addr::UNSPECIFIED),
        ("multicast", 7878, Ipv4Addr::new(224, 0, 0, 1)),
        ("broadcast", 7878, Ipv4Addr::BROADCAST),
        ("no port", 0, Ipv4Addr::new(127, 0, 0, 3)),
    ];
    for round in 0..3 {
        for (what, port, ip) in bogus {
            let instance = format!("bogus {what} {tag}");
            let txt = vec![format!("name=bogus {what}").into_bytes()];
            let host = format!("bogus-{what}-{round}.local.").replace(' ', "-");
            let packet = announcement(&instance, &host, port, ip, &txt);
            socket.send_to(&packet, MDNS).unwrap();
        }
    }
    poll_for(&mut browser, &mut window, Duration::from_millis(800));
    let listed = browser.sources();
    assert!(
        listed.iter().all(|f| !f.name.starts_with("bogus")),
        "bogus announcements are ignored: {:?}",
        listed
            .iter()
            .map(|f| (&f.name, &f.addrs))
            .collect::<Vec<_>>()
    );

    // Thousands of sources with huge TXT records: the table stops at its limit, every
    // name is cut to its bound, and the real source heard first is still there.
    let list_run = std::thread::spawn(|| {
        let started = Instant::now();
        let out = Command::new(bin())
            .args(["list", "--json", "--seconds", "3"])
            .output()
            .unwrap();
        (started.elapsed(), out)
    });
    let mut passes = 0;
    for round in 0..3 {
        flood(&socket, round, 1000);
        passes += poll_for(&mut browser, &mut window, Duration::from_millis(300));
    }
    passes += poll_for(&mut browser, &mut window, Duration::from_secs(1));
    let listed: Vec<Found> = browser.sources();
    assert_eq!(listed.len(), MAX_SOURCES, "bounded");
    assert!(browser.ignored() > 0, "the rest are counted as ignored");
    assert!(listed.iter().all(|f| f.name.len() <= MAX_NAME_BYTES));
    assert!(
        listed.iter().any(|f| f.name == real_name),
        "a source heard before the flood stays listed"
    );

    // The window went on making passes through the flood (each returned: nothing in
    // it waits on the network), and its panel lists the bound at most, the real
    // source among them.
    if let Some(w) = &window {
        assert!(passes >= 10, "{passes} window passes");
        let panel = w.state().sources().found();
        assert!(
            panel.len() > 1 && panel.len() <= MAX_SOURCES,
            "{}",
            panel.len()
        );
        assert!(panel.iter().any(|f| f.name == real_name));
    }

    // `list` heard the flood too: it ends in time and prints at most the limit.
    let (took, out) = list_run.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(10), "list took {took:?}");
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(all.len() <= MAX_SOURCES, "{}", all.len());
    assert!(
        all.iter().any(|s| s["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("NNNN") && n.len() <= MAX_NAME_BYTES)),
        "the flood reached list"
    );
}
