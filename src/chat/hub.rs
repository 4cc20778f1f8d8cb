//! The broadcast hub: where events are published, and how they reach every
//! node's connections. In-process here; a Redis pub/sub hub can implement
//! the same trait to span several nodes.

use std::sync::Arc;

use async_trait::async_trait;

use super::{event::Publication, fanout::Fanout};

#[async_trait]
pub trait Hub: Send + Sync {
    /// Delivers the publication to the connections it concerns on every
    /// node. Publications of one room are delivered in the order published.
    async fn publish(&self, publication: Publication) -> anyhow::Result<()>;
    /// This node's connections.
    fn local(&self) -> &Arc<Fanout>;
}

/// A single-node hub: publishing is delivering.
pub struct InProcessHub {
    fanout: Arc<Fanout>,
}

impl InProcessHub {
    pub fn new(queue_len: usize) -> Self {
        InProcessHub {
            fanout: Arc::new(Fanout::new(queue_len)),
        }
    }
}

#[async_trait]
impl Hub for InProcessHub {
    async fn publish(&self, publication: Publication) -> anyhow::Result<()> {
        self.fanout.deliver(&publication);
        Ok(())
    }

    fn local(&self) -> &Arc<Fanout> {
        &self.fanout
    }
}
