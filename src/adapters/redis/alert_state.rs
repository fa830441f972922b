//! `AlertState` in Redis, so every operator of a fleet honours the same silences: one hash
//! `hemostat:silences`, field = silence id, value = the silence as JSON.

use super::conn::{Conn, Target};
use chrono::{DateTime, Utc};
use redis::AsyncCommands;

use crate::alert::silence::Silence;
use crate::alert::state::{AlertState, AlertStateError, KEEP_EXPIRED};

/// The hash holding every silence.
pub(crate) const SILENCES_KEY: &str = "hemostat:silences";

/// Silences in Redis.
#[derive(Clone)]
pub struct RedisAlertState {
    conn: Conn,
    key: String,
}

impl std::fmt::Debug for RedisAlertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisAlertState")
    }
}

fn unavailable(op: &'static str) -> impl FnOnce(redis::RedisError) -> AlertStateError {
    move |e| AlertStateError::Unavailable {
        op,
        source: Box::new(e),
    }
}

impl RedisAlertState {
    /// Silences in the Redis of `config` (the connection is made on first use).
    pub fn from_config(config: &super::RedisConfig) -> Result<Self, AlertStateError> {
        let conn = super::conn::connect(config, 1, std::time::Duration::from_secs(2))
            .map_err(unavailable("connect"))?;
        Ok(Self {
            key: conn.key(SILENCES_KEY),
            conn,
        })
    }

    /// Connects lazily (the first command connects; a lost connection is re-made).
    pub fn new(client: impl Into<Target>) -> Result<Self, AlertStateError> {
        Self::from_config(client.into().config())
    }

    fn parse(id: &str, json: &str) -> Result<Silence, AlertStateError> {
        serde_json::from_str(json).map_err(|source| AlertStateError::Corrupt {
            place: format!("{SILENCES_KEY}[{id}]"),
            source,
        })
    }
}

#[async_trait::async_trait]
impl AlertState for RedisAlertState {
    async fn silences(&self) -> Result<Vec<Silence>, AlertStateError> {
        let mut conn = self.conn.clone();
        let all: Vec<(String, String)> = conn
            .hgetall(&self.key)
            .await
            .map_err(unavailable("HGETALL silences"))?;
        let mut out = all
            .iter()
            .map(|(id, json)| Self::parse(id, json))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|s| s.starts_at);
        let now = Utc::now();
        let old: Vec<&str> = out
            .iter()
            .filter(|s| now - s.ends_at >= KEEP_EXPIRED)
            .map(|s| s.id.as_str())
            .collect();
        if !old.is_empty() {
            let _: Result<(), _> = conn.hdel(&self.key, &old).await;
        }
        out.retain(|s| now - s.ends_at < KEEP_EXPIRED);
        Ok(out)
    }

    async fn add_silence(&self, silence: Silence) -> Result<(), AlertStateError> {
        let json = serde_json::to_string(&silence).expect("silence serialises");
        let mut conn = self.conn.clone();
        conn.hset::<_, _, _, ()>(&self.key, &silence.id, json)
            .await
            .map_err(unavailable("HSET silence"))
    }

    async fn expire_silence(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Silence>, AlertStateError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn
            .hget(&self.key, id)
            .await
            .map_err(unavailable("HGET silence"))?;
        let Some(json) = json else {
            return Ok(None);
        };
        let mut silence = Self::parse(id, &json)?;
        if silence.ends_at > now {
            silence.ends_at = now;
        }
        self.add_silence(silence.clone()).await?;
        Ok(Some(silence))
    }
}
