//! The registry: the `collab/board` room, the `boards` list and the `me` RPCs.

use crate::db::{Board, Column, Store};
use crate::identity::{self, clean_name, valid_color, valid_id};
use liveroom::{App, Ctx, JsonSchema, LiveError, Merge, Room, Stream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// Longest card title, in characters (after trimming).
pub const MAX_TITLE: usize = 200;
/// Longest board name, in characters (after trimming).
pub const MAX_BOARD_NAME: usize = 80;
/// How many boards the list stream holds.
pub const LIST_MAX: usize = 100;

const TITLE_ERROR: &str = "Title must be 1-200 characters";
const BOARD_ID_ERROR: &str = "Board ids are 1-64 letters, digits, '-' or '_'";
/// The message of a link to a board that does not exist (the page offers to create it).
pub const BOARD_NOT_FOUND: &str = "No board has this id";

/// Settings of the registry.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a member stays in the room's presence after its last socket closed.
    pub grace: Duration,
    /// Minimum interval between cursor broadcasts of one user.
    pub cursor_throttle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            grace: liveroom::room::DEFAULT_GRACE,
            cursor_throttle: liveroom::Cursors::DEFAULT_THROTTLE,
        }
    }
}

/// A card title: trimmed, 1..=200 characters.
pub fn clean_title(title: &str) -> Result<String, LiveError> {
    let title = title.trim();
    let n = title.chars().count();
    if n == 0 || n > MAX_TITLE {
        return Err(LiveError::validation("title", TITLE_ERROR));
    }
    Ok(title.to_owned())
}

fn check_board_id(id: &str) -> Result<(), LiveError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(LiveError::validation("boardId", BOARD_ID_ERROR))
    }
}

/// A URL-friendly id for a new board named `name`: its slug plus a random suffix.
fn board_id_for(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let suffix = identity::random_id(6).to_ascii_lowercase();
    if slug.is_empty() {
        suffix
    } else {
        format!("{slug}-{suffix}")
    }
}

/// The handlers' context: the store is the app's state.
pub type BoardCtx = Ctx<Store>;

fn user_field(ctx: &BoardCtx, field: &str) -> Option<String> {
    let value = ctx.user().and_then(|u| u.get(field))?;
    value.as_str().map(str::to_owned)
}

fn announce(ctx: &BoardCtx, board: Option<Board>) -> Result<(), LiveError> {
    if let Some(board) = board {
        ctx.publish("boards", "created", &board)?;
    }
    Ok(())
}

fn require_user(ctx: &BoardCtx) -> Result<(), LiveError> {
    if ctx.is_guest() {
        return Err(LiveError::unauthenticated(
            "No identity: allow cookies for this site and reload the page",
        ));
    }
    Ok(())
}

/// The board room's args: `[boardId]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardArgs {
    /// The board id (its link).
    pub board_id: String,
}

/// What the others see of a member.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Member {
    /// Display name.
    pub name: Option<String>,
    /// Avatar and cursor colour, `#rrggbb`.
    pub color: Option<String>,
}

/// What a member shares of its own while on a board (awareness): the card it is editing.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Editing {
    /// The id of the card being edited (`None`: none).
    pub editing: Option<String>,
}

/// A cursor position on the board, in board pixels.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Pointer {
    /// From the board's left edge.
    pub x: f64,
    /// From the board's top edge.
    pub y: f64,
}

/// `addCard(boardId, title)`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct AddCard {
    /// The card's title, 1-200 characters.
    pub title: String,
}

/// `editCard(boardId, cardId, title)`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EditCard {
    /// The card.
    pub card_id: String,
    /// Its new title, 1-200 characters.
    pub title: String,
}

/// `moveCard(boardId, cardId, column, position)`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoveCard {
    /// The card.
    pub card_id: String,
    /// Where it goes.
    pub column: Column,
    /// Its order in that column (ascending).
    pub position: f64,
}

/// `deleteCard(boardId, cardId)`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteCard {
    /// The card.
    pub card_id: String,
}

/// A deleted card, as `deleted` events and `deleteCard` carry it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Deleted {
    /// The card's id.
    pub id: String,
}

/// `boards/create(name)`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateBoard {
    /// Display name, 1-80 characters.
    pub name: String,
}

/// `boards/createWithId(boardId)`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateWithId {
    /// The id the board gets (a link that was shared before the board existed).
    pub board_id: String,
}

/// A board that was just created.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NewBoard {
    /// Its id (and link).
    pub id: String,
    /// Its display name.
    pub name: String,
}

/// `me/update(name, color)`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpdateMe {
    /// Display name, 1-40 characters.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
}

/// Who the caller is, as `me/get` and `me/update` answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Me {
    /// The identity key.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Colour, `#rrggbb`.
    pub color: String,
}

/// The `collab/board` room: the cards of a board, its members and their cursors.
pub fn board_room(options: &Options) -> Room<BoardArgs, Store> {
    // The guard runs first: the topic is only computed for valid ids.
    Room::new(|_ctx: &BoardCtx, b: &BoardArgs| format!("board:{}", b.board_id))
        .key("id")
        .init(|ctx, BoardArgs { board_id }| async move { Ok(ctx.state().cards(&board_id).await?) })
        .presence(|ctx| Member {
            name: user_field(ctx, "name"),
            color: user_field(ctx, "color"),
        })
        .awareness::<Editing>()
        // The board list shows how many people are on each board (to signed-in users).
        .lobby_guard(|ctx| async move { require_user(&ctx) })
        .cursors(liveroom::Cursors::throttle(options.cursor_throttle))
        .cursor_position::<Pointer>()
        .grace(options.grace)
        // A mistyped link must not create a board: only `boards/create` and
        // `boards/createWithId` do, and the guard refuses the others with NOT_FOUND.
        .guard(|ctx, BoardArgs { board_id }| async move {
            require_user(&ctx)?;
            check_board_id(&board_id)?;
            match ctx.state().board(&board_id).await? {
                Some(_) => Ok(()),
                None => Err(LiveError::not_found(BOARD_NOT_FOUND)),
            }
        })
        .action(
            "addCard",
            |ctx, BoardArgs { board_id }, AddCard { title }| async move {
                let title = clean_title(&title)?;
                let author = ctx.identity().to_owned();
                let id = identity::random_id(12);
                let (card, created) = ctx
                    .state()
                    .add_card(&id, &board_id, &title, &author)
                    .await?;
                announce(&ctx, created)?;
                ctx.publish("created", &card)?;
                Ok(card)
            },
        )
        .action(
            "editCard",
            |ctx, BoardArgs { board_id }, EditCard { card_id, title }| async move {
                let title = clean_title(&title)?;
                let card = ctx
                    .state()
                    .edit_card(&board_id, &card_id, &title)
                    .await?
                    .ok_or_else(|| LiveError::not_found("No such card"))?;
                ctx.publish("updated", &card)?;
                Ok(card)
            },
        )
        .action(
            "moveCard",
            |ctx, BoardArgs { board_id }, m: MoveCard| async move {
                let card = ctx
                    .state()
                    .move_card(&board_id, &m.card_id, m.column, m.position)
                    .await?
                    .ok_or_else(|| LiveError::not_found("No such card"))?;
                ctx.publish("updated", &card)?;
                Ok(card)
            },
        )
        .action(
            "deleteCard",
            |ctx, BoardArgs { board_id }, DeleteCard { card_id }| async move {
                if !ctx.state().delete_card(&board_id, &card_id).await? {
                    return Err(LiveError::not_found("No such card"));
                }
                let gone = Deleted { id: card_id };
                ctx.publish("deleted", &gone)?;
                Ok(gone)
            },
        )
}

/// The whole registry, over `store`.
pub fn app(store: Store, options: &Options) -> App<Store> {
    App::with_state(store)
        .authenticate(identity::authenticate)
        .room("collab", "board", board_room(options))
        .stream(
            "boards/list",
            Stream::new("boards")
                .init(|ctx: BoardCtx, ()| async move {
                    Ok::<_, LiveError>(ctx.state().boards(LIST_MAX as i64).await?)
                })
                .merge(Merge::crud("id").prepend().max(LIST_MAX)),
        )
        .rpc(
            "boards/create",
            |ctx: BoardCtx, CreateBoard { name }| async move {
                require_user(&ctx)?;
                let name = name.trim();
                let n = name.chars().count();
                if n == 0 || n > MAX_BOARD_NAME {
                    return Err(LiveError::validation(
                        "name",
                        "Name must be 1-80 characters",
                    ));
                }
                // Ids carry a random suffix; a collision just draws again.
                for _ in 0..5 {
                    if let Some(board) = ctx.state().ensure_board(&board_id_for(name), name).await?
                    {
                        ctx.publish("boards", "created", &board)?;
                        return Ok(NewBoard {
                            id: board.id,
                            name: board.name,
                        });
                    }
                }
                Err(LiveError::internal())
            },
        )
        .rpc(
            "boards/createWithId",
            |ctx: BoardCtx, CreateWithId { board_id }| async move {
                require_user(&ctx)?;
                check_board_id(&board_id)?;
                let board = match ctx.state().ensure_board(&board_id, &board_id).await? {
                    Some(board) => {
                        ctx.publish("boards", "created", &board)?;
                        board
                    }
                    // Someone else created it meanwhile: that is fine too.
                    None => ctx
                        .state()
                        .board(&board_id)
                        .await?
                        .ok_or_else(LiveError::internal)?,
                };
                Ok(NewBoard {
                    id: board.id,
                    name: board.name,
                })
            },
        )
        .rpc("me/get", |ctx: BoardCtx, ()| async move {
            Ok::<_, LiveError>(me_of(&ctx))
        })
        .rpc(
            "me/update",
            |ctx: BoardCtx, UpdateMe { name, color }| async move {
                require_user(&ctx)?;
                let Some(name) = clean_name(&name) else {
                    return Err(LiveError::validation(
                        "name",
                        "Name must be 1-40 characters",
                    ));
                };
                if !valid_color(&color) {
                    return Err(LiveError::validation(
                        "color",
                        "Colour must look like #rrggbb",
                    ));
                }
                // The identity lives in the cookies, which the page sets; new sockets pick
                // them up. This checks the values and answers what they will become.
                Ok(Me {
                    id: ctx.identity().to_owned(),
                    name,
                    color: color.to_ascii_lowercase(),
                })
            },
        )
}

/// The caller as `me/get` answers it (`null` for a guest).
fn me_of(ctx: &BoardCtx) -> Option<Me> {
    Some(Me {
        id: user_field(ctx, "id")?,
        name: user_field(ctx, "name").unwrap_or_default(),
        color: user_field(ctx, "color").unwrap_or_default(),
    })
}

/// The registry manifest, for the front end's code generator.
pub fn manifest(store: Store, options: &Options) -> Value {
    app(store, options).build().manifest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(clean_title("  hi  ").unwrap(), "hi");
        assert_eq!(clean_title("   ").unwrap_err().code(), "VALIDATION");
        assert_eq!(clean_title(&"é".repeat(200)).unwrap(), "é".repeat(200));
        let err = clean_title(&"x".repeat(201)).unwrap_err();
        assert_eq!(err.message(), TITLE_ERROR);
        assert_eq!(err.issues()[0].path, vec![json!("title")]);
    }

    #[test]
    fn board_ids_for_names() {
        let id = board_id_for("Sprint Planning: Q3!");
        assert!(id.starts_with("sprint-planning-q3-"), "{id}");
        assert!(valid_id(&id));
        assert!(valid_id(&board_id_for("???")));
        assert!(valid_id(&board_id_for(&"long name ".repeat(20))));
    }

    #[tokio::test]
    async fn manifest_matches_the_contract() {
        let m = manifest(Store::lazy(), &Options::default());
        let room = &m["modules"]["collab"]["rooms"]["board"];
        assert_eq!(room["topicArgs"], 1);
        assert_eq!(room["args"], json!(["boardId"]));
        assert_eq!(room["merge"], "crud");
        assert_eq!(room["key"], "id");
        assert_eq!(room["presence"], true);
        assert_eq!(room["cursors"], true);
        assert_eq!(room["lobby"], true);
        assert_eq!(
            room["actions"]["moveCard"]["args"],
            json!(["boardId", "cardId", "column", "position"])
        );
        assert_eq!(
            room["actions"]["editCard"]["args"],
            json!(["boardId", "cardId", "title"])
        );
        // Schemas: what generated TypeScript is typed from.
        assert_eq!(room["data"]["items"]["$ref"], "#/$defs/Card");
        assert_eq!(room["presenceData"]["$ref"], "#/$defs/Member");
        assert_eq!(room["cursorPosition"]["$ref"], "#/$defs/Pointer");
        let params = &room["actions"]["moveCard"]["params"];
        assert_eq!(params[2]["schema"]["$ref"], "#/$defs/Column");
        assert_eq!(params[3]["schema"]["type"], "number");
        assert_eq!(room["actions"]["addCard"]["result"]["$ref"], "#/$defs/Card");
        let columns: Vec<&Value> = m["$defs"]["Column"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| &v["const"])
            .collect();
        assert_eq!(columns, [&json!("todo"), &json!("doing"), &json!("done")]);
        let boards = &m["modules"]["boards"];
        assert_eq!(boards["streams"]["list"]["merge"], "crud");
        assert_eq!(boards["streams"]["list"]["key"], "id");
        assert_eq!(boards["rpcs"]["create"]["args"], json!(["name"]));
        assert_eq!(boards["rpcs"]["createWithId"]["args"], json!(["boardId"]));
        assert_eq!(
            m["modules"]["me"]["rpcs"]["update"]["args"],
            json!(["name", "color"])
        );
    }
}
