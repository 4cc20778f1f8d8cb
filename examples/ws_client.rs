//! A minimal Mirage WebSocket client: prints every event, and sends each
//! line typed on stdin to a room (or, as `@user text`, as a direct message).
//!
//! ```sh
//! cargo run --example ws_client -- --url ws://127.0.0.1:5000 --token <token> --room 1
//! ```

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

#[derive(Parser)]
struct Args {
    /// Server base URL (ws:// or wss://).
    #[arg(long, default_value = "ws://127.0.0.1:5000")]
    url: String,
    /// Session token from `POST /api/login`.
    #[arg(long)]
    token: String,
    /// Room that plain lines are sent to.
    #[arg(long)]
    room: Option<i64>,
    /// Replay retained room messages newer than this (Unix seconds).
    #[arg(long)]
    since: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let query = args
        .since
        .map(|s| format!("?since={s}"))
        .unwrap_or_default();
    let mut request = format!("{}/api/ws{query}", args.url).into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", HeaderValue::from_str(&args.token)?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    let (mut sink, mut stream) = socket.split();

    let printer = tokio::spawn(async move {
        while let Some(Ok(frame)) = stream.next().await {
            if let Message::Text(text) = frame {
                println!("{text}");
            }
        }
        println!("connection closed");
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let frame = match (line.strip_prefix('@'), args.room) {
            (Some(rest), _) => {
                let (recipient, message) = rest.split_once(' ').unwrap_or((rest, ""));
                json!({"type": "send_inbox_message", "recipient": recipient, "message": message})
            }
            (None, Some(room_id)) => {
                json!({"type": "send_room_message", "room_id": room_id, "message": line})
            }
            (None, None) => {
                eprintln!("no --room given; use @user message for a direct message");
                continue;
            }
        };
        sink.send(Message::Text(frame.to_string().into())).await?;
    }
    sink.close().await?;
    printer.await?;
    Ok(())
}
