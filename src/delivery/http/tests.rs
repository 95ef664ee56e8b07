//! The pool against a bare HTTP/1.1 server that counts its connections and answers as told.

use std::sync::atomic::AtomicUsize;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::delivery::testkit::delivery_settings;

/// How the server answers each request.
#[derive(Clone, Copy)]
enum Answer {
    /// `200`, empty body, connection kept.
    KeepAlive,
    /// `200` with `connection: close`, then closes.
    Close,
    /// `200` with a 64 KiB body, connection kept.
    LargeBody,
}

struct Server {
    url: String,
    connections: Arc<AtomicUsize>,
}

impl Server {
    async fn start(answer: Answer) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, answer));
            }
        });
        Server { url, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Answers the requests of one connection until the client closes it.
async fn serve(mut stream: tokio::net::TcpStream, answer: Answer) {
    let mut buffer = Vec::new();
    loop {
        let Some(head_end) = read_until_head_end(&mut stream, &mut buffer).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("content-length"));
        while buffer.len() < head_end + length {
            let mut chunk = [0; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + length);
        let reply = match answer {
            Answer::KeepAlive => "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_owned(),
            Answer::Close => {
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
            }
            Answer::LargeBody => format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 65536\r\n\r\n{}",
                "x".repeat(65536)
            ),
        };
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        if let Answer::Close = answer {
            return;
        }
    }
}

/// The end of the next request head in `buffer` (reading more as needed), `None` at EOF.
async fn read_until_head_end(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
) -> Option<usize> {
    loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut chunk = [0; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn client() -> HttpClient {
    build(
        &delivery_settings(Duration::from_secs(5)),
        GuardedResolver::permissive(),
    )
    .expect("client")
}

fn post() -> Request<Body> {
    Request::post("/")
        .body(Full::new(Bytes::from_static(b"{\"id\":1}")))
        .expect("request")
}

/// One exchange; the body is read to its end and the connection released when `read_body`.
async fn exchange(destination: &Destination, read_body: bool) -> u16 {
    let (response, lease) = destination.send(post()).await.expect("response");
    let status = response.status().as_u16();
    if read_body {
        response.into_body().collect().await.expect("body");
        destination.release(lease);
    }
    status
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let server = Server::start(Answer::KeepAlive).await;
    let destination = Destination::of(&server.url, &client()).expect("destination");
    for _ in 0..5 {
        assert_eq!(exchange(&destination, true).await, 200);
    }
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn endpoints_of_one_host_share_its_pool() {
    let server = Server::start(Answer::KeepAlive).await;
    let client = client();
    let first = Destination::of(&server.url, &client).expect("destination");
    let second = Destination::of(&format!("{}/other?x=1", server.url), &client).expect("second");
    assert_eq!(exchange(&first, true).await, 200);
    assert_eq!(exchange(&second, true).await, 200);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn concurrent_requests_each_get_a_connection_and_all_are_kept() {
    let server = Server::start(Answer::KeepAlive).await;
    let destination = Destination::of(&server.url, &client()).expect("destination");
    let statuses = futures::future::join_all((0..4).map(|_| exchange(&destination, true))).await;
    assert_eq!(statuses, vec![200; 4]);
    let opened = server.connections();
    assert!(
        (1..=4).contains(&opened),
        "{opened} connections for 4 requests"
    );
    let statuses = futures::future::join_all((0..4).map(|_| exchange(&destination, true))).await;
    assert_eq!(statuses, vec![200; 4]);
    assert!(
        server.connections() <= 4,
        "{} connections after 8 requests, at most 4 at a time",
        server.connections()
    );
}

#[tokio::test]
async fn a_connection_the_server_closes_is_not_reused() {
    let server = Server::start(Answer::Close).await;
    let destination = Destination::of(&server.url, &client()).expect("destination");
    for _ in 0..3 {
        assert_eq!(exchange(&destination, true).await, 200);
    }
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn a_response_not_read_to_its_end_never_goes_back_to_the_pool() {
    let server = Server::start(Answer::LargeBody).await;
    let destination = Destination::of(&server.url, &client()).expect("destination");
    assert_eq!(exchange(&destination, false).await, 200);
    assert_eq!(exchange(&destination, true).await, 200);
    assert_eq!(exchange(&destination, true).await, 200);
    assert_eq!(
        server.connections(),
        2,
        "the unread response's connection is dropped, the read one reused"
    );
}

#[test]
fn a_url_without_a_host_is_no_destination() {
    assert!(Destination::of("/hook", &client()).is_none());
}
