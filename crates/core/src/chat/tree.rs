//! The shape of a chat's messages: which message follows which, which are
//! alternatives of one another, and the current path. Computed from the
//! state alone, so every replica holding the same state shows the same path.
//!
//! The rules (`docs/design.md` §4.2):
//!
//! - A message *follows* its `parent`. A message without one (every message
//!   written before chat format 3, and every plain append to a chat that has
//!   no branch) follows the previous such message in (creation stamp, id)
//!   order: the flat chats of earlier releases are one chain.
//! - A message written to replace another (`alternative_of`: regenerate,
//!   edit and resend) takes that message's place: the original and its
//!   alternatives form one *place*, and exactly one of them is shown.
//! - Several places that follow the same message are all shown, in
//!   (creation stamp, id) order, each followed by its own continuation:
//!   two devices that append to the same last message while offline both
//!   stay on the current path. Only an explicit alternative hides anything.
//! - At a place with alternatives, the current path shows the one with the
//!   most recent action: the selection register's stamp counts for the
//!   selected message and everything above it, a message's creation stamp
//!   for itself and everything above it. Alternatives whose whole branch is
//!   deleted are never chosen while another is live.
//! - A tombstone counts only while it places something: the selected
//!   message, or one a live message follows or replaces (directly or
//!   through other tombstones). Any other tombstone is ignored, as if
//!   already collected, so garbage collection never moves a message.
//! - Hand-built or damaged states stay deterministic: a parent or original
//!   that is missing is ignored (the message joins the chain), and cycles
//!   are broken at a fixed place.

use super::{Chat, Message};
use crate::hlc::Hlc;
use crate::ids::MessageId;
use std::collections::HashMap;

/// A message on the current path, with its place among its alternatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathEntry<'a> {
    /// The message.
    pub message: &'a Message,
    /// Its position among the live alternatives of its place, from 1
    /// (oldest first): the "2" of "2 of 3".
    pub position: usize,
    /// How many live alternatives its place holds: the "3" of "2 of 3";
    /// 1 when it has none.
    pub alternatives: usize,
}

/// A live message of any branch, in display order (see [`Chat::tree`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeEntry<'a> {
    /// The message.
    pub message: &'a Message,
    /// How many places with more than one live alternative lie on the way
    /// to it, itself included: the indentation of a tree view.
    pub depth: usize,
    /// Its position among the live alternatives of its place, from 1.
    pub position: usize,
    /// How many live alternatives its place holds.
    pub alternatives: usize,
    /// True if the message is on the current path.
    pub on_path: bool,
}

/// The computed shape of one chat state.
pub(crate) struct Tree<'a> {
    /// Every live message and every tombstone that places one (see
    /// [`Chat::placing`]), in (creation stamp, id) order.
    nodes: Vec<&'a Message>,
    index: HashMap<MessageId, usize>,
    /// The original of each node's place (itself for an original).
    place: Vec<usize>,
    /// For an original: the node its place follows (`None`: a root).
    follows: Vec<Option<usize>>,
    /// Per node: the places (by original) that follow it, in order.
    children: Vec<Vec<usize>>,
    roots: Vec<usize>,
    /// Per original: the members of its place, in order.
    members: Vec<Vec<usize>>,
    /// Per node: the latest creation stamp of a live message in its branch.
    latest: Vec<Option<Hlc>>,
    /// Per node: on the way from the selected message up to a root.
    selected_line: Vec<bool>,
    selected_at: Hlc,
}

enum Frame {
    Place(usize, usize),
    Node(usize, usize),
}

impl<'a> Tree<'a> {
    /// The shape of `chat`.
    pub(crate) fn new(chat: &'a Chat) -> Self {
        let placing = chat.placing(|m| !m.is_deleted());
        let mut nodes: Vec<&Message> = chat
            .messages
            .values()
            .filter(|m| placing.contains(&m.id))
            .collect();
        nodes.sort_by_key(|m| (m.created, m.id));
        let n = nodes.len();
        let index: HashMap<MessageId, usize> =
            nodes.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
        let place: Vec<usize> = (0..n).map(|i| original(&nodes, &index, i)).collect();

        // Explicit parents of originals, then cycles broken in node order.
        let mut explicit: Vec<Option<usize>> = (0..n)
            .map(|i| {
                let parent = nodes[i].parent.and_then(|p| index.get(&p).copied());
                parent.filter(|&p| place[i] == i && p != i)
            })
            .collect();
        let mut state = vec![0u8; n];
        for start in 0..n {
            if place[start] != start || state[start] != 0 {
                continue;
            }
            let mut walk = Vec::new();
            let mut current = start;
            loop {
                match state[current] {
                    2 => break,
                    1 => {
                        if let Some(&last) = walk.last() {
                            explicit[last] = None;
                        }
                        break;
                    }
                    _ => {}
                }
                state[current] = 1;
                walk.push(current);
                match explicit[current] {
                    Some(parent) => current = place[parent],
                    None => break,
                }
            }
            for node in walk {
                state[node] = 2;
            }
        }

        // Originals without a usable parent form the chain.
        let mut follows = vec![None; n];
        let mut previous_in_chain = None;
        for i in 0..n {
            if place[i] != i {
                continue;
            }
            follows[i] = match explicit[i] {
                Some(parent) => Some(parent),
                None => previous_in_chain.replace(i),
            };
        }
        let mut children = vec![Vec::new(); n];
        let mut roots = Vec::new();
        let mut members = vec![Vec::new(); n];
        for i in 0..n {
            members[place[i]].push(i);
            if place[i] == i {
                match follows[i] {
                    Some(parent) => children[parent].push(i),
                    None => roots.push(i),
                }
            }
        }

        let mut tree = Self {
            nodes,
            index,
            place,
            follows,
            children,
            roots,
            members,
            latest: vec![None; n],
            selected_line: vec![false; n],
            selected_at: chat.selected.at,
        };
        tree.compute_latest();
        if let Some(selected) = chat.selected.value {
            if let Some(&node) = tree.index.get(&selected) {
                let mut current = Some(node);
                while let Some(node) = current {
                    if tree.selected_line[node] {
                        break;
                    }
                    tree.selected_line[node] = true;
                    current = tree.follows[tree.place[node]];
                }
            }
        }
        tree
    }

    /// Every node, parents before children (pre-order over all branches).
    fn pre_order(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<usize> = self.roots.iter().rev().copied().collect();
        while let Some(place) = stack.pop() {
            for &member in &self.members[place] {
                out.push(member);
            }
            for &member in self.members[place].iter().rev() {
                stack.extend(self.children[member].iter().rev());
            }
        }
        out
    }

    fn compute_latest(&mut self) {
        for node in self.pre_order().into_iter().rev() {
            let mut latest = (!self.nodes[node].is_deleted()).then_some(self.nodes[node].created);
            for &place in &self.children[node] {
                for &member in &self.members[place] {
                    latest = latest.max(self.latest[member]);
                }
            }
            self.latest[node] = latest;
        }
    }

    fn is_live(&self, node: usize) -> bool {
        !self.nodes[node].is_deleted()
    }

    /// The member of `place` the current path shows.
    fn chosen(&self, place: usize) -> usize {
        let members = &self.members[place];
        let score = |&&node: &&usize| {
            let pinned = self.selected_line[node].then_some(self.selected_at);
            (
                self.latest[node].is_some(),
                self.latest[node].max(pinned),
                node,
            )
        };
        members.iter().max_by_key(score).copied().unwrap_or(place)
    }

    /// (position, count) of `node` among the live members of its place.
    fn position(&self, node: usize) -> (usize, usize) {
        let live: Vec<usize> = self.members[self.place[node]]
            .iter()
            .copied()
            .filter(|&m| self.is_live(m))
            .collect();
        let position = live.iter().position(|&m| m == node).map_or(0, |p| p + 1);
        (position, live.len().max(1))
    }

    fn path_nodes(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack: Vec<usize> = self.roots.iter().rev().copied().collect();
        while let Some(place) = stack.pop() {
            let node = self.chosen(place);
            if self.is_live(node) {
                out.push(node);
            }
            stack.extend(self.children[node].iter().rev());
        }
        out
    }

    /// The current path.
    pub(crate) fn path(&self) -> Vec<PathEntry<'a>> {
        self.path_nodes()
            .into_iter()
            .map(|node| {
                let (position, alternatives) = self.position(node);
                PathEntry {
                    message: self.nodes[node],
                    position,
                    alternatives,
                }
            })
            .collect()
    }

    /// Every live message of every branch, in display order.
    pub(crate) fn entries(&self) -> Vec<TreeEntry<'a>> {
        let mut on_path = vec![false; self.nodes.len()];
        for node in self.path_nodes() {
            on_path[node] = true;
        }
        let mut out = Vec::new();
        let mut stack: Vec<Frame> = self
            .roots
            .iter()
            .rev()
            .map(|&place| Frame::Place(place, 0))
            .collect();
        while let Some(frame) = stack.pop() {
            match frame {
                Frame::Place(place, depth) => {
                    let live = self.members[place]
                        .iter()
                        .filter(|&&m| self.is_live(m))
                        .count();
                    let depth = if live > 1 { depth + 1 } else { depth };
                    for &member in self.members[place].iter().rev() {
                        stack.push(Frame::Node(member, depth));
                    }
                }
                Frame::Node(node, depth) => {
                    if self.is_live(node) {
                        let (position, alternatives) = self.position(node);
                        out.push(TreeEntry {
                            message: self.nodes[node],
                            depth,
                            position,
                            alternatives,
                            on_path: on_path[node],
                        });
                    }
                    for &place in self.children[node].iter().rev() {
                        stack.push(Frame::Place(place, depth));
                    }
                }
            }
        }
        out
    }

    /// The live members of `id`'s place, oldest first (empty for an
    /// unknown id).
    pub(crate) fn alternatives(&self, id: MessageId) -> Vec<&'a Message> {
        match self.index.get(&id) {
            Some(&node) => self.members[self.place[node]]
                .iter()
                .filter(|&&m| self.is_live(m))
                .map(|&m| self.nodes[m])
                .collect(),
            None => Vec::new(),
        }
    }

    /// The original of `id`'s place and the message that place follows.
    pub(crate) fn place_of(&self, id: MessageId) -> Option<(MessageId, Option<MessageId>)> {
        let &node = self.index.get(&id)?;
        let original = self.place[node];
        let follows = self.follows[original].map(|parent| self.nodes[parent].id);
        Some((self.nodes[original].id, follows))
    }
}

/// The original of node `i`'s place: the end of its `alternative_of` chain
/// (itself when it has none, the chain cycles or names a missing message).
fn original(nodes: &[&Message], index: &HashMap<MessageId, usize>, i: usize) -> usize {
    let mut current = i;
    for _ in 0..=nodes.len() {
        let next = nodes[current]
            .alternative_of
            .and_then(|of| index.get(&of).copied());
        match next {
            Some(next) if next != current => current = next,
            _ => return current,
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use crate::chat::{Chat, NewMessage, Role};
    use crate::hlc::Hlc;
    use crate::ids::{ChatId, DeviceId, MessageId};

    fn at(ms: u64, dev: u64) -> Hlc {
        Hlc::new(ms, 0, DeviceId(dev))
    }

    fn texts(chat: &Chat) -> Vec<String> {
        chat.messages()
            .iter()
            .map(|m| m.content().to_string())
            .collect()
    }

    fn markers(chat: &Chat) -> Vec<String> {
        chat.path()
            .iter()
            .map(|e| format!("{}{}/{}", e.message.content(), e.position, e.alternatives))
            .collect()
    }

    /// Q1 A1 Q2 A2, written on device 1 at 1..=4.
    fn conversation() -> (Chat, [MessageId; 4]) {
        let mut chat = Chat::new(ChatId::new(), "t", at(0, 1));
        let q1 = chat.add_message(Role::User, "Q1", at(1, 1));
        let a1 = chat.add_message(Role::Assistant, "A1", at(2, 1));
        let q2 = chat.add_message(Role::User, "Q2", at(3, 1));
        let a2 = chat.add_message(Role::Assistant, "A2", at(4, 1));
        (chat, [q1, a1, q2, a2])
    }

    #[test]
    fn a_chat_nobody_branched_is_the_flat_list() {
        let (chat, _) = conversation();
        assert!(!chat.is_branched());
        assert_eq!(texts(&chat), ["Q1", "A1", "Q2", "A2"]);
        assert!(chat.messages.values().all(|m| m.parent.is_none()));
        assert_eq!(chat.tree().len(), 4);
        assert!(chat.tree().iter().all(|e| e.on_path && e.depth == 0));
    }

    #[test]
    fn regenerating_keeps_both_answers_shows_the_new_one_and_selects_back() {
        let (mut chat, [_, _, _, a2]) = conversation();
        let again = chat
            .add_alternative(a2, "A2 again", at(5, 1))
            .expect("A2 is live");
        assert!(chat.is_branched());
        assert_eq!(markers(&chat), ["Q11/1", "A11/1", "Q21/1", "A2 again2/2"]);
        let alternatives: Vec<MessageId> = chat.alternatives(a2).iter().map(|m| m.id).collect();
        assert_eq!(alternatives, [a2, again]);
        assert_eq!(chat.alternatives(again).len(), 2);
        assert_eq!(
            chat.messages.get(&again).map(|m| m.role().clone()),
            Some(Role::Assistant)
        );
        assert!(chat.select(a2, at(6, 1)));
        assert_eq!(markers(&chat), ["Q11/1", "A11/1", "Q21/1", "A21/2"]);
        // Regenerating an alternative adds to the same place.
        chat.add_alternative(again, "third", at(7, 1));
        assert_eq!(chat.alternatives(a2).len(), 3);
        assert_eq!(texts(&chat), ["Q1", "A1", "Q2", "third"]);
    }

    #[test]
    fn edit_and_resend_starts_a_branch_and_the_old_one_stays_reachable() {
        let (mut chat, [_, _, q2, _]) = conversation();
        let edited = chat
            .add_alternative(q2, "Q2 edited", at(5, 1))
            .expect("Q2 is live");
        assert_eq!(texts(&chat), ["Q1", "A1", "Q2 edited"]);
        chat.add_message(Role::Assistant, "A2 for the edit", at(6, 1));
        assert_eq!(texts(&chat), ["Q1", "A1", "Q2 edited", "A2 for the edit"]);
        assert!(chat.select(q2, at(7, 1)));
        assert_eq!(texts(&chat), ["Q1", "A1", "Q2", "A2"]);
        assert!(chat.select(edited, at(8, 1)));
        assert_eq!(texts(&chat), ["Q1", "A1", "Q2 edited", "A2 for the edit"]);
        // The tree view holds both branches, nested under the place.
        let tree: Vec<(String, usize, bool)> = chat
            .tree()
            .iter()
            .map(|e| (e.message.content().to_string(), e.depth, e.on_path))
            .collect();
        assert_eq!(
            tree,
            [
                ("Q1".to_string(), 0, true),
                ("A1".to_string(), 0, true),
                ("Q2".to_string(), 1, false),
                ("A2".to_string(), 1, false),
                ("Q2 edited".to_string(), 1, true),
                ("A2 for the edit".to_string(), 1, true),
            ]
        );
    }

    #[test]
    fn two_devices_regenerating_the_same_answer_offline_keep_all_three() {
        let (base, [_, _, _, a2]) = conversation();
        let (mut laptop, mut phone) = (base.clone(), base);
        let from_laptop = laptop.add_alternative(a2, "laptop", at(5, 1));
        let from_phone = phone.add_alternative(a2, "phone", at(6, 2));
        let merged = Chat::merged(&laptop, &phone);
        assert_eq!(merged, Chat::merged(&phone, &laptop));
        let alternatives: Vec<Option<MessageId>> =
            merged.alternatives(a2).iter().map(|m| Some(m.id)).collect();
        assert_eq!(alternatives, [Some(a2), from_laptop, from_phone]);
        // The later regeneration is shown; nothing is lost.
        assert_eq!(texts(&merged), ["Q1", "A1", "Q2", "phone"]);
        assert_eq!(merged.tree().len(), 6);
    }

    #[test]
    fn concurrent_appends_to_a_branched_chat_both_stay_on_the_path() {
        let (mut base, [_, _, _, a2]) = conversation();
        base.add_alternative(a2, "A2'", at(5, 1));
        let (mut laptop, mut phone) = (base.clone(), base);
        laptop.add_message(Role::User, "laptop asks", at(6, 1));
        laptop.add_message(Role::Assistant, "laptop answer", at(7, 1));
        phone.add_message(Role::User, "phone asks", at(6, 2));
        let merged = Chat::merged(&laptop, &phone);
        assert_eq!(
            texts(&merged),
            [
                "Q1",
                "A1",
                "Q2",
                "A2'",
                "laptop asks",
                "laptop answer",
                "phone asks"
            ]
        );
        // The next message goes after the last one shown.
        let mut next = merged.clone();
        let last = next.add_message(Role::Assistant, "answer", at(8, 1));
        assert_eq!(next.messages().last().map(|m| m.id), Some(last));
    }

    #[test]
    fn the_most_recent_action_chooses_the_branch() {
        let (mut base, [_, _, _, a2]) = conversation();
        let again = base.add_alternative(a2, "A2'", at(5, 1)).expect("live");
        let (mut laptop, mut phone) = (base.clone(), base);
        // The laptop goes back to the first answer; later the phone, which
        // had not seen that, continues on the regenerated one.
        laptop.select(a2, at(6, 1));
        phone.add_message(Role::User, "follow-up", at(7, 2));
        let merged = Chat::merged(&laptop, &phone);
        assert_eq!(texts(&merged), ["Q1", "A1", "Q2", "A2'", "follow-up"]);
        // A later selection wins again.
        let mut later = merged.clone();
        later.select(a2, at(8, 1));
        assert_eq!(texts(&later), ["Q1", "A1", "Q2", "A2"]);
        assert_eq!(later.alternatives(again).len(), 2);
    }

    #[test]
    fn deleting_the_shown_alternative_shows_the_other_one() {
        let (mut chat, [_, _, _, a2]) = conversation();
        let again = chat.add_alternative(a2, "A2'", at(5, 1)).expect("live");
        chat.delete_message(again, at(6, 1));
        assert_eq!(texts(&chat), ["Q1", "A1", "Q2", "A2"]);
        assert_eq!(markers(&chat)[3], "A21/1");
        assert_eq!(chat.add_alternative(again, "x", at(7, 1)), None);
        assert!(!chat.select(again, at(7, 1)));
    }

    #[test]
    fn garbage_collection_keeps_a_tombstone_that_places_a_message() {
        let (mut chat, [_, _, q2, _]) = conversation();
        let edited = chat.add_alternative(q2, "Q2'", at(5, 1)).expect("live");
        let answer = chat.add_message(Role::Assistant, "A2'", at(6, 1));
        chat.delete_message(edited, at(7, 1));
        chat.collect_garbage(at(100, 0));
        assert!(chat.messages.contains_key(&edited));
        assert_eq!(
            chat.messages.get(&answer).and_then(|m| m.parent),
            Some(edited)
        );
        assert_eq!(texts(&chat), ["Q1", "A1", "A2'"]);
    }

    #[test]
    fn cycles_and_missing_places_in_a_hand_built_state_lose_nothing() {
        let mut chat = Chat::new(ChatId::new(), "t", at(0, 1));
        let ids: Vec<MessageId> = (1..=6).map(|n| MessageId::from_bytes([n; 16])).collect();
        let place = |i: usize, parent: Option<usize>, of: Option<usize>| NewMessage {
            id: ids[i],
            role: Role::User,
            content: format!("m{i}"),
            created: at(i as u64 + 1, 1),
            written: None,
            parent: parent.map(|p| ids[p]),
            alternative_of: of.map(|o| ids[o]),
            attachments: Vec::new(),
        };
        chat.insert(place(0, Some(1), None));
        chat.insert(place(1, Some(0), None));
        chat.insert(place(2, None, Some(3)));
        chat.insert(place(3, None, Some(2)));
        chat.insert(place(4, Some(4), Some(4)));
        let mut missing = place(5, None, None);
        missing.parent = Some(MessageId::from_bytes([99; 16]));
        missing.alternative_of = Some(MessageId::from_bytes([98; 16]));
        chat.insert(missing);
        let mut listed: Vec<MessageId> = chat.tree().iter().map(|e| e.message.id).collect();
        listed.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(listed, expected);
        let path = chat.messages();
        assert!(!path.is_empty());
        let mut unique: Vec<MessageId> = path.iter().map(|m| m.id).collect();
        unique.dedup();
        assert_eq!(unique.len(), path.len());
    }
}
