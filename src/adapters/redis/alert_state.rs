//! `AlertState` in Redis, so every operator of a fleet honours the same silences: one hash
//! `hemostat:silences`, field = silence id, value = the silence as JSON.

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::alert::silence::Silence;
use crate::alert::state::{AlertState, AlertStateError, KEEP_EXPIRED};

/// The hash holding every silence.
pub const SILENCES_KEY: &str = "hemostat:silences";

/// Silences in Redis.
#[derive(Clone)]
pub struct RedisAlertState {
    conn: ConnectionManager,
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
        let client =
            redis::Client::open(config.connection_info().clone()).map_err(unavailable("client"))?;
        Self::new(client)
    }

    /// Connects lazily (the first command connects; a lost connection is re-made).
    pub fn new(client: redis::Client) -> Result<Self, AlertStateError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(unavailable("connect"))?;
        Ok(Self { conn })
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
            .hgetall(SILENCES_KEY)
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
            let _: Result<(), _> = conn.hdel(SILENCES_KEY, &old).await;
        }
        out.retain(|s| now - s.ends_at < KEEP_EXPIRED);
        Ok(out)
    }

    async fn add_silence(&self, silence: Silence) -> Result<(), AlertStateError> {
        let json = serde_json::to_string(&silence).expect("silence serialises");
        let mut conn = self.conn.clone();
        conn.hset::<_, _, _, ()>(SILENCES_KEY, &silence.id, json)
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
            .hget(SILENCES_KEY, id)
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
