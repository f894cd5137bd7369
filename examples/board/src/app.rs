//! The registry: the `collab/board` room, the `boards` list and the `me` RPCs.

use crate::db::{Board, Store, COLUMNS};
use crate::identity::{self, clean_name, valid_color, valid_id};
use liveroom::{App, Ctx, LiveError, Merge, Room, RoomCtx, Stream};
use serde_json::{json, Value};
use std::time::Duration;

/// Longest card title, in characters (after trimming).
pub const MAX_TITLE: usize = 200;
/// Longest board name, in characters (after trimming).
pub const MAX_BOARD_NAME: usize = 80;
/// How many boards the list stream holds.
pub const LIST_MAX: usize = 100;

const TITLE_ERROR: &str = "Title must be 1-200 characters";
const BOARD_ID_ERROR: &str = "Board ids are 1-64 letters, digits, '-' or '_'";

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

fn check_column(column: &str) -> Result<(), LiveError> {
    if COLUMNS.contains(&column) {
        Ok(())
    } else {
        Err(LiveError::validation(
            "column",
            "Column must be todo, doing or done",
        ))
    }
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

fn user_field<'a>(ctx: &'a Ctx, field: &str) -> Option<&'a Value> {
    ctx.user().and_then(|u| u.get(field))
}

fn announce(ctx: &Ctx, board: Option<Board>) -> Result<(), LiveError> {
    if let Some(board) = board {
        ctx.publish("boards", "created", &board)?;
    }
    Ok(())
}

fn require_user(ctx: &Ctx) -> Result<(), LiveError> {
    if ctx.is_guest() {
        return Err(LiveError::unauthenticated(
            "No identity: allow cookies for this site and reload the page",
        ));
    }
    Ok(())
}

/// The `collab/board` room: the cards of a board, its members and their cursors.
pub fn board_room(store: Store, options: &Options) -> Room<(String,)> {
    let (init_db, add_db, edit_db, move_db, del_db) = (
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        store,
    );
    // The guard runs first: the topic is only computed for valid ids.
    Room::new(|_ctx: &Ctx, (id,): &(String,)| format!("board:{id}"))
        .args(["boardId"])
        .key("id")
        .init(move |ctx: Ctx, (id,): (String,)| {
            let db = init_db.clone();
            async move {
                // A shared link works like a room name: opening it creates the board.
                announce(&ctx, db.ensure_board(&id, &id).await?)?;
                Ok(db.cards(&id).await?)
            }
        })
        .presence(|ctx| {
            json!({
                "name": user_field(ctx, "name"),
                "color": user_field(ctx, "color"),
            })
        })
        .cursors(liveroom::Cursors::throttle(options.cursor_throttle))
        .grace(options.grace)
        .guard(|ctx: Ctx, (id,): (String,)| async move {
            require_user(&ctx)?;
            check_board_id(&id)
        })
        .action(
            "addCard",
            move |ctx: RoomCtx, (board,): (String,), (title,): (String,)| {
                let db = add_db.clone();
                async move {
                    let title = clean_title(&title)?;
                    let author = ctx.identity().to_owned();
                    let id = identity::random_id(12);
                    let (card, created) = db.add_card(&id, &board, &title, &author).await?;
                    announce(&ctx, created)?;
                    ctx.publish("created", &card)?;
                    Ok(card)
                }
            },
        )
        .action_args("addCard", ["title"])
        .action(
            "editCard",
            move |ctx: RoomCtx, (board,): (String,), (card_id, title): (String, String)| {
                let db = edit_db.clone();
                async move {
                    let title = clean_title(&title)?;
                    let card = db
                        .edit_card(&board, &card_id, &title)
                        .await?
                        .ok_or_else(|| LiveError::not_found("No such card"))?;
                    ctx.publish("updated", &card)?;
                    Ok(card)
                }
            },
        )
        .action_args("editCard", ["cardId", "title"])
        .action(
            "moveCard",
            move |ctx: RoomCtx,
                  (board,): (String,),
                  (card_id, column, position): (String, String, f64)| {
                let db = move_db.clone();
                async move {
                    check_column(&column)?;
                    let card = db
                        .move_card(&board, &card_id, &column, position)
                        .await?
                        .ok_or_else(|| LiveError::not_found("No such card"))?;
                    ctx.publish("updated", &card)?;
                    Ok(card)
                }
            },
        )
        .action_args("moveCard", ["cardId", "column", "position"])
        .action(
            "deleteCard",
            move |ctx: RoomCtx, (board,): (String,), (card_id,): (String,)| {
                let db = del_db.clone();
                async move {
                    if !db.delete_card(&board, &card_id).await? {
                        return Err(LiveError::not_found("No such card"));
                    }
                    let gone = json!({ "id": card_id });
                    ctx.publish("deleted", &gone)?;
                    Ok(gone)
                }
            },
        )
        .action_args("deleteCard", ["cardId"])
}

/// The whole registry.
pub fn app(store: Store, options: &Options) -> App {
    let (list_db, create_db) = (store.clone(), store.clone());
    App::new()
        .authenticate(identity::authenticate)
        .room("collab", "board", board_room(store, options))
        .stream(
            "boards/list",
            Stream::new("boards")
                .init(move |_ctx: Ctx, ()| {
                    let db = list_db.clone();
                    async move { Ok::<_, LiveError>(db.boards(LIST_MAX as i64).await?) }
                })
                .merge(Merge::crud("id").prepend().max(LIST_MAX)),
        )
        .rpc("boards/create", move |ctx: Ctx, (name,): (String,)| {
            let db = create_db.clone();
            async move {
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
                    if let Some(board) = db.ensure_board(&board_id_for(name), name).await? {
                        ctx.publish("boards", "created", &board)?;
                        return Ok(json!({ "id": board.id, "name": board.name }));
                    }
                }
                Err(LiveError::internal())
            }
        })
        .arg_names("boards/create", ["name"])
        .rpc("me/get", |ctx: Ctx, ()| async move {
            Ok::<_, LiveError>(ctx.user().cloned())
        })
        .rpc(
            "me/update",
            |ctx: Ctx, (name, color): (String, String)| async move {
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
                Ok(json!({
                    "id": ctx.identity(),
                    "name": name,
                    "color": color.to_ascii_lowercase(),
                }))
            },
        )
        .arg_names("me/update", ["name", "color"])
}

/// The registry manifest, for the front end's code generator.
pub fn manifest(store: Store, options: &Options) -> Value {
    app(store, options).build().manifest()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            room["actions"]["moveCard"]["args"],
            json!(["boardId", "cardId", "column", "position"])
        );
        assert_eq!(
            room["actions"]["editCard"]["args"],
            json!(["boardId", "cardId", "title"])
        );
        let boards = &m["modules"]["boards"];
        assert_eq!(boards["streams"]["list"]["merge"], "crud");
        assert_eq!(boards["streams"]["list"]["key"], "id");
        assert_eq!(boards["rpcs"]["create"]["args"], json!(["name"]));
        assert_eq!(
            m["modules"]["me"]["rpcs"]["update"]["args"],
            json!(["name", "color"])
        );
    }
}
