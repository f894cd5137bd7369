//! Storage: boards and cards in SQLite or Postgres through sqlx's `Any` driver.
//!
//! Every write is one statement or one transaction, so nothing is ever half written. The SQL
//! is the common subset of both databases (`$n` placeholders, `ON CONFLICT DO NOTHING`,
//! `RETURNING`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::time::{SystemTime, UNIX_EPOCH};

/// The three columns of a board, in display order (`"todo"`, `"doing"`, `"done"` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Column {
    /// Not started.
    Todo,
    /// In progress.
    Doing,
    /// Finished.
    Done,
}

impl Column {
    /// Every column, in display order.
    pub const ALL: [Column; 3] = [Column::Todo, Column::Doing, Column::Done];

    /// The name stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Column::Todo => "todo",
            Column::Doing => "doing",
            Column::Done => "done",
        }
    }

    fn parse(name: &str) -> Result<Column, sqlx::Error> {
        Column::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown column `{name}`").into()))
    }
}

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS boards (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS cards (
        id TEXT PRIMARY KEY,
        board_id TEXT NOT NULL,
        title TEXT NOT NULL,
        col TEXT NOT NULL,
        position DOUBLE PRECISION NOT NULL,
        created_by TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS cards_by_board ON cards (board_id, col, position)",
    "CREATE INDEX IF NOT EXISTS boards_by_age ON boards (created_at)",
];

const CARD_COLUMNS: &str = "id, board_id, title, col, position, created_by, updated_at";

/// A board as the `boards/list` stream sends it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Board {
    /// The board id (also its room name and link).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time, milliseconds since the epoch.
    pub created_at: i64,
}

/// A card as the board room sends it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    /// Card id.
    pub id: String,
    /// The board it is on.
    pub board_id: String,
    /// Title, 1..=200 characters.
    pub title: String,
    /// Its column.
    pub column: Column,
    /// Order within the column (ascending).
    pub position: f64,
    /// Identity of the user who created it.
    pub created_by: String,
    /// Last change, milliseconds since the epoch.
    pub updated_at: i64,
}

fn card_of(row: &AnyRow) -> Result<Card, sqlx::Error> {
    Ok(Card {
        id: row.try_get("id")?,
        board_id: row.try_get("board_id")?,
        title: row.try_get("title")?,
        column: Column::parse(&row.try_get::<String, _>("col")?)?,
        position: row.try_get("position")?,
        created_by: row.try_get("created_by")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn board_of(row: &AnyRow) -> Result<Board, sqlx::Error> {
    Ok(Board {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A SQLite URL gets `mode=rwc` so the file is created on first start.
fn with_create(url: &str) -> String {
    let is_sqlite = url.starts_with("sqlite:");
    if !is_sqlite || url.contains("mode=") || url.contains(":memory:") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}mode=rwc")
}

/// The database: a connection pool over SQLite or Postgres.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Connects to `url` (`sqlite://file.db`, `postgres://...`) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Store, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .connect(&with_create(url))
            .await?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// A pool that never connects until used (for printing the manifest).
    pub fn lazy() -> Store {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .connect_lazy("sqlite::memory:")
            .expect("a valid in-memory URL");
        Store { pool }
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        for m in MIGRATIONS {
            sqlx::query(m).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Creates board `id` named `name` unless it exists; `Some` if it was created now
    /// (`None`: the id was taken).
    pub async fn ensure_board(&self, id: &str, name: &str) -> Result<Option<Board>, sqlx::Error> {
        ensure_board(&self.pool, id, name).await
    }

    /// Board `id`, if it exists.
    pub async fn board(&self, id: &str) -> Result<Option<Board>, sqlx::Error> {
        sqlx::query("SELECT id, name, created_at FROM boards WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(board_of)
            .transpose()
    }

    /// The newest `limit` boards, newest first.
    pub async fn boards(&self, limit: i64) -> Result<Vec<Board>, sqlx::Error> {
        sqlx::query("SELECT id, name, created_at FROM boards ORDER BY created_at DESC, id LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(board_of)
            .collect()
    }

    /// The cards of a board, by column then position.
    pub async fn cards(&self, board_id: &str) -> Result<Vec<Card>, sqlx::Error> {
        let sql = format!(
            "SELECT {CARD_COLUMNS} FROM cards WHERE board_id = $1
             ORDER BY CASE col WHEN 'todo' THEN 0 WHEN 'doing' THEN 1 ELSE 2 END, position, id"
        );
        sqlx::query(&sql)
            .bind(board_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(card_of)
            .collect()
    }

    /// Adds a card at the bottom of `todo`, creating the board if needed, in one transaction.
    /// Also returns the board if it was created by this call.
    pub async fn add_card(
        &self,
        id: &str,
        board_id: &str,
        title: &str,
        created_by: &str,
    ) -> Result<(Card, Option<Board>), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let board = ensure_board(&mut *tx, board_id, board_id).await?;
        let sql = format!(
            "INSERT INTO cards ({CARD_COLUMNS})
             SELECT $1, $2, $3, 'todo', COALESCE(MAX(position), 0) + 1, $4, $5
             FROM cards WHERE board_id = $2 AND col = 'todo'
             RETURNING {CARD_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(board_id)
            .bind(title)
            .bind(created_by)
            .bind(now_ms())
            .fetch_one(&mut *tx)
            .await?;
        let card = card_of(&row)?;
        tx.commit().await?;
        Ok((card, board))
    }

    /// Renames a card; `None` if there is no such card on that board.
    pub async fn edit_card(
        &self,
        board_id: &str,
        card_id: &str,
        title: &str,
    ) -> Result<Option<Card>, sqlx::Error> {
        let sql = format!(
            "UPDATE cards SET title = $1, updated_at = $2 WHERE board_id = $3 AND id = $4
             RETURNING {CARD_COLUMNS}"
        );
        sqlx::query(&sql)
            .bind(title)
            .bind(now_ms())
            .bind(board_id)
            .bind(card_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(card_of)
            .transpose()
    }

    /// Moves a card to `column` at `position`; `None` if there is no such card on that board.
    pub async fn move_card(
        &self,
        board_id: &str,
        card_id: &str,
        column: Column,
        position: f64,
    ) -> Result<Option<Card>, sqlx::Error> {
        let sql = format!(
            "UPDATE cards SET col = $1, position = $2, updated_at = $3
             WHERE board_id = $4 AND id = $5
             RETURNING {CARD_COLUMNS}"
        );
        sqlx::query(&sql)
            .bind(column.as_str())
            .bind(position)
            .bind(now_ms())
            .bind(board_id)
            .bind(card_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(card_of)
            .transpose()
    }

    /// Deletes a card; `false` if there was no such card on that board.
    pub async fn delete_card(&self, board_id: &str, card_id: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM cards WHERE board_id = $1 AND id = $2")
            .bind(board_id)
            .bind(card_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

async fn ensure_board<'e, E>(exec: E, id: &str, name: &str) -> Result<Option<Board>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let board = Board {
        id: id.to_owned(),
        name: name.to_owned(),
        created_at: now_ms(),
    };
    let done = sqlx::query(
        "INSERT INTO boards (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&board.id)
    .bind(&board.name)
    .bind(board.created_at)
    .execute(exec)
    .await?;
    Ok((done.rows_affected() > 0).then_some(board))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_create_the_file() {
        assert_eq!(
            with_create("sqlite://board.db"),
            "sqlite://board.db?mode=rwc"
        );
        assert_eq!(
            with_create("sqlite://b.db?x=1"),
            "sqlite://b.db?x=1&mode=rwc"
        );
        assert_eq!(
            with_create("sqlite://b.db?mode=ro"),
            "sqlite://b.db?mode=ro"
        );
        assert_eq!(with_create("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(with_create("postgres://u@h/db"), "postgres://u@h/db");
    }
}
