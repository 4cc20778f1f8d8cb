//! A lean HTTP/1.1 keep-alive client: one hyper connection per task, no
//! pool, TCP_NODELAY, so the bench spends as little CPU as it can on the
//! two cores it shares with the server.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request,
    client::conn::http1::{self, SendRequest},
    header,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One request, ready to send again and again.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub token: Option<String>,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Req {
    pub fn get(path: impl Into<String>) -> Req {
        Req {
            method: Method::GET,
            path: path.into(),
            token: None,
            content_type: "",
            body: Bytes::new(),
        }
    }

    pub fn post_json(path: impl Into<String>, body: serde_json::Value) -> Req {
        Req {
            method: Method::POST,
            path: path.into(),
            token: None,
            content_type: "application/json",
            body: Bytes::from(body.to_string()),
        }
    }

    pub fn auth(mut self, token: &str) -> Req {
        self.token = Some(token.to_owned());
        self
    }
}

pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        // The connection task ends when `sender` is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
        })
    }

    /// Sends `req` and reads the whole response: (status, body).
    pub async fn send(&mut self, req: &Req) -> Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(&req.path)
            .header(header::HOST, &self.host);
        if !req.content_type.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, req.content_type);
        }
        if let Some(token) = &req.token {
            builder = builder.header(header::AUTHORIZATION, token);
        }
        let request = builder.body(Full::new(req.body.clone()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// A load request's outcome: an answer, or why none came.
pub enum Outcome {
    Answered(u16, Bytes),
    Failed(String),
}

impl Outcome {
    /// From a send that may have timed out (`None`).
    pub fn of(sent: Option<Result<(u16, Bytes)>>) -> Outcome {
        match sent {
            Some(Ok((status, body))) => Outcome::Answered(status, body),
            Some(Err(e)) => Outcome::Failed(format!("transport: {e:#}")),
            None => Outcome::Failed("timeout or no connection".to_owned()),
        }
    }

    /// The HTTP status; 0 when no answer came.
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Answered(status, _) => *status,
            Outcome::Failed(_) => 0,
        }
    }

    /// The first 200 characters of the answer or of the failure, for error
    /// samples. Decoded only when asked: decoding every answer cost the
    /// bench CPU in proportion to the answer's size, on the cores it shares
    /// with the server.
    pub fn sample(&self) -> String {
        match self {
            Outcome::Answered(_, body) => String::from_utf8_lossy(body).chars().take(200).collect(),
            Outcome::Failed(why) => why.chars().take(200).collect(),
        }
    }
}
