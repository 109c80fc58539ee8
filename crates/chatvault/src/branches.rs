//! Conversation branches on [`ChatVault`]: regenerate an answer, edit and
//! resend a question, list a message's alternatives ("2 of 3") and select
//! the branch to show. The tree and its merge live in the chat model
//! (`chatvault_core::Chat`, `docs/design.md` §4.2); this is the app-facing
//! surface.

use crate::vault::message_not_found;
use crate::ChatVault;
use chatvault_core::{ChatId, Error, Message, MessageId, Result, Role};

/// The alternatives in one message's place, as an app shows them
/// ("< 2 of 3 >").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alternatives {
    /// Every live alternative, oldest first: the original message and each
    /// regenerated or edited version of it.
    pub messages: Vec<Message>,
    /// Which of them the current path shows, from 1, or `None` when the
    /// current path goes through another branch.
    pub shown: Option<usize>,
    /// The position of the message asked about, from 1.
    pub position: usize,
}

impl Alternatives {
    /// How many alternatives the place holds (1: none besides the message).
    pub fn count(&self) -> usize {
        self.messages.len()
    }
}

impl ChatVault {
    /// Regenerates answer `answer` of `chat`: stores `content` as a new
    /// alternative of it (the old answer is kept, one arrow away) and shows
    /// it. Returns the new message's id. [`Error::NotFound`] if there is no
    /// such live message, [`Error::InvalidInput`] if it is not an
    /// assistant's answer (use [`edit_and_resend`](Self::edit_and_resend)).
    pub async fn regenerate(
        &self,
        chat: ChatId,
        answer: MessageId,
        content: impl Into<String>,
    ) -> Result<MessageId> {
        self.write_alternative(chat, answer, content.into(), true)
            .await
    }

    /// Edits question `question` of `chat` and resends it: stores `content`
    /// as a new alternative of it and shows that branch, which starts empty
    /// after it (append the new answer with
    /// [`add_message`](Self::add_message)); the old question and everything
    /// that followed it stay reachable. Returns the new message's id.
    /// [`Error::NotFound`] if there is no such live message,
    /// [`Error::InvalidInput`] if it is an assistant's answer (use
    /// [`regenerate`](Self::regenerate)).
    pub async fn edit_and_resend(
        &self,
        chat: ChatId,
        question: MessageId,
        content: impl Into<String>,
    ) -> Result<MessageId> {
        self.write_alternative(chat, question, content.into(), false)
            .await
    }

    /// The alternatives in `message`'s place in `chat`, with the position
    /// of `message` and of the one shown. [`Error::NotFound`] if there is
    /// no such live message.
    pub async fn alternatives(&self, chat: ChatId, message: MessageId) -> Result<Alternatives> {
        let full = self.load_full_chat(chat).await?;
        let messages: Vec<Message> = full.alternatives(message).into_iter().cloned().collect();
        let position = messages
            .iter()
            .position(|m| m.id == message)
            .ok_or_else(|| message_not_found(chat, message))?;
        let path = full.messages();
        let shown = messages
            .iter()
            .position(|m| path.iter().any(|p| p.id == m.id))
            .map(|p| p + 1);
        Ok(Alternatives {
            messages,
            shown,
            position: position + 1,
        })
    }

    /// Shows the branch of `chat` that goes through `message` (a tap on
    /// "< 2 of 3 >"): it becomes the current path on every device, until a
    /// later selection or a message written in another branch.
    /// [`Error::NotFound`] if there is no such live message.
    pub async fn select_branch(&self, chat: ChatId, message: MessageId) -> Result<()> {
        self.engine()
            .update(chat, move |c, clock| {
                if c.select(message, clock.tick()) {
                    Ok(())
                } else {
                    Err(message_not_found(chat, message))
                }
            })
            .await
    }

    async fn write_alternative(
        &self,
        chat: ChatId,
        of: MessageId,
        content: String,
        regenerate: bool,
    ) -> Result<MessageId> {
        self.engine()
            .update(chat, move |c, clock| {
                let role = c
                    .messages
                    .get(&of)
                    .filter(|m| !m.is_deleted())
                    .map(|m| m.role().clone())
                    .ok_or_else(|| message_not_found(chat, of))?;
                match (regenerate, role == Role::Assistant) {
                    (true, false) => {
                        return Err(Error::invalid(format!(
                            "message {of} is not an assistant's answer, so it cannot be \
                             regenerated; use edit_and_resend to change a question"
                        )))
                    }
                    (false, true) => {
                        return Err(Error::invalid(format!(
                            "message {of} is an assistant's answer; use regenerate to \
                             write another version of it"
                        )))
                    }
                    _ => {}
                }
                c.add_alternative(of, content, clock.tick())
                    .ok_or_else(|| message_not_found(chat, of))
            })
            .await
    }
}
