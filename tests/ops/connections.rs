//! Many connections at once, as an outside load test opens them.

use std::{os::unix::process::CommandExt, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::process::Server;

const CONNECTIONS: usize = 600;

/// Started with a soft limit of 256 open files (as a shell's default of
/// 1,024 would be to a larger load), the server raises its own limit to
/// the hard one and answers every one of 600 connections held open at once.
/// Without that it could accept about 250, and the rest waited unanswered.
#[tokio::test]
async fn connections_past_the_soft_open_file_limit_are_answered() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes `limit`.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let hard = limit.rlim_max;
    if hard < 2 * CONNECTIONS as libc::rlim_t {
        eprintln!("SKIPPED: the hard limit on open files ({hard}) is too low for this test");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &[], |command| {
        // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
        unsafe {
            command.pre_exec(move || {
                let low = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &low) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    });
    let addr = server.base.trim_start_matches("http://").to_owned();

    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        // All open first, then a request on each, then every answer read.
        let mut streams = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            streams.push(TcpStream::connect(&addr).await.expect("connects"));
        }
        for stream in &mut streams {
            let request = "GET /api/ping HTTP/1.1\r\nHost: test\r\n\r\n";
            stream.write_all(request.as_bytes()).await.expect("sent");
        }
        let mut answered = 0;
        for stream in &mut streams {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "connection closed before an answer");
                head.extend_from_slice(&buf[..n]);
            }
            assert!(
                head.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&head)
            );
            answered += 1;
        }
        answered
    })
    .await;
    assert_eq!(answered, Ok(CONNECTIONS), "answers within 30 s");
}
