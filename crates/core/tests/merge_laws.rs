//! The algebraic laws of chat merge, checked on states built by random
//! operations from three devices that sync at random moments.
//!
//! Every state shares one chat id and a small pool of message ids, so random
//! operations collide often: concurrent edits, deletions racing edits, the
//! same message added on two devices, the chat deleted while others write,
//! and branches: alternatives, replies to any message and selections, so
//! that trees (and hand-built cycles) form and merge.

use chatvault_core::{
    Attachment, BlobId, Chat, ChatId, Clock, DeviceId, Hlc, Lww, MessageId, NewMessage, Role,
};
use proptest::prelude::*;
use proptest::sample::Index;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const DEVICES: usize = 3;
const MESSAGE_POOL: u8 = 6;

/// Odd texts carry an attachment (even ones none), so attachments travel
/// through every law and two replies with one slot may differ in them.
fn attachments(text: u8) -> Vec<Attachment> {
    if text.is_multiple_of(2) {
        return Vec::new();
    }
    vec![Attachment {
        id: BlobId([text; 32]),
        name: format!("file {text}.png"),
        media_type: "image/png".to_string(),
        size: u64::from(text) * 1000,
    }]
}

fn chat_id() -> ChatId {
    ChatId::from_bytes([7; 16])
}

fn message_id(slot: u8) -> MessageId {
    // Descending bytes so id order differs from slot order.
    MessageId::from_bytes([0x80 - slot; 16])
}

fn role(n: u8) -> Role {
    match n % 4 {
        0 => Role::User,
        1 => Role::Assistant,
        2 => Role::System,
        _ => Role::Tool,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add {
        slot: u8,
        role: u8,
        text: u8,
    },
    /// Adds a message imported with an original time.
    Import {
        slot: u8,
        text: u8,
        written: u8,
    },
    Edit {
        slot: u8,
        text: u8,
    },
    DeleteMessage {
        slot: u8,
    },
    /// Writes message `slot` as an alternative of message `of` (regenerate,
    /// edit and resend) and selects it.
    Alternative {
        slot: u8,
        of: u8,
        text: u8,
    },
    /// Writes message `slot` following message `parent`.
    Reply {
        slot: u8,
        parent: u8,
        text: u8,
    },
    /// Selects the branch of message `slot`.
    Select {
        slot: u8,
    },
    Rename {
        title: u8,
    },
    Star(bool),
    DeleteChat,
}

#[derive(Clone, Debug)]
enum Step {
    /// Device `device` performs `op` when its wall clock reads `wall`.
    Local { device: usize, wall: u64, op: Op },
    /// Device `to` receives device `from`'s current state.
    Sync { from: usize, to: usize },
}

/// Random operations; deleting the chat is rare and allowed in only half
/// the cases, because it ends every other interesting interaction.
fn op(allow_delete_chat: bool) -> impl Strategy<Value = Op> {
    let slot = 0..MESSAGE_POOL;
    prop_oneof![
        8 => (slot.clone(), any::<u8>(), any::<u8>())
            .prop_map(|(slot, role, text)| Op::Add { slot, role, text }),
        3 => (slot.clone(), any::<u8>(), any::<u8>())
            .prop_map(|(slot, text, written)| Op::Import { slot, text, written }),
        6 => (slot.clone(), any::<u8>()).prop_map(|(slot, text)| Op::Edit { slot, text }),
        4 => slot.clone().prop_map(|slot| Op::DeleteMessage { slot }),
        3 => (slot.clone(), slot.clone(), any::<u8>())
            .prop_map(|(slot, of, text)| Op::Alternative { slot, of, text }),
        3 => (slot.clone(), slot.clone(), any::<u8>())
            .prop_map(|(slot, parent, text)| Op::Reply { slot, parent, text }),
        2 => slot.prop_map(|slot| Op::Select { slot }),
        3 => any::<u8>().prop_map(|title| Op::Rename { title }),
        3 => any::<bool>().prop_map(Op::Star),
        u32::from(allow_delete_chat) => Just(Op::DeleteChat),
    ]
}

fn step(allow_delete_chat: bool) -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..DEVICES, 0u64..40, op(allow_delete_chat))
            .prop_map(|(device, wall, op)| Step::Local { device, wall, op }),
        1 => (0..DEVICES, 0..DEVICES).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    any::<bool>().prop_flat_map(move |allow| proptest::collection::vec(step(allow), 0..max))
}

/// Three devices with their own clocks (wall time set per step, so clocks
/// run at different speeds and collide on milliseconds), all starting from
/// the same freshly created chat.
struct World {
    walls: Vec<Arc<AtomicU64>>,
    clocks: Vec<Clock>,
    states: Vec<Chat>,
    /// Every state any device held after any step: the pool that later
    /// deliveries draw from, stale states included.
    history: Vec<Chat>,
}

impl World {
    fn new() -> Self {
        Self::from_states(vec![
            Chat::new(
                chat_id(),
                "start",
                Hlc::new(0, 0, DeviceId(0))
            );
            DEVICES
        ])
    }

    fn from_states(states: Vec<Chat>) -> Self {
        let walls: Vec<_> = (0..states.len())
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        let clocks = walls
            .iter()
            .enumerate()
            .map(|(d, wall)| {
                let wall = wall.clone();
                let clock = Clock::with_time_source(
                    DeviceId(d as u64 + 1),
                    Box::new(move || wall.load(Ordering::SeqCst)),
                );
                for state in &states {
                    clock.observe(state.last_activity());
                }
                clock
            })
            .collect();
        Self {
            walls,
            clocks,
            history: states.clone(),
            states,
        }
    }

    fn run(&mut self, steps: &[Step]) {
        for step in steps {
            match step {
                Step::Local { device, wall, op } => {
                    self.walls[*device].store(*wall, Ordering::SeqCst);
                    let at = self.clocks[*device].tick();
                    apply(&mut self.states[*device], op, at);
                    self.history.push(self.states[*device].clone());
                }
                Step::Sync { from, to } => {
                    let incoming = self.states[*from].clone();
                    self.clocks[*to].observe(incoming.last_activity());
                    self.states[*to].merge(&incoming);
                    self.history.push(self.states[*to].clone());
                }
            }
        }
    }
}

fn apply(chat: &mut Chat, op: &Op, at: Hlc) {
    match op {
        Op::Add {
            slot,
            role: r,
            text,
        } => chat.insert_message(message_id(*slot), role(*r), format!("add {text}"), at),
        Op::Import {
            slot,
            text,
            written,
        } => chat.insert_written_message(
            message_id(*slot),
            Role::User,
            format!("import {text}"),
            at,
            Some(u64::from(*written)),
        ),
        Op::Edit { slot, text } => {
            chat.edit_message(message_id(*slot), format!("edit {text}"), at);
        }
        Op::DeleteMessage { slot } => {
            chat.delete_message(message_id(*slot), at);
        }
        Op::Alternative { slot, of, text } => {
            let of = message_id(*of);
            let parent = chat.messages.get(&of).and_then(|m| m.parent);
            chat.insert(NewMessage {
                id: message_id(*slot),
                role: Role::Assistant,
                content: format!("alternative {text}"),
                created: at,
                written: None,
                parent,
                alternative_of: Some(of),
                attachments: Vec::new(),
            });
            chat.select(message_id(*slot), at);
        }
        Op::Reply { slot, parent, text } => chat.insert(NewMessage {
            id: message_id(*slot),
            role: Role::User,
            content: format!("reply {text}"),
            created: at,
            written: None,
            parent: Some(message_id(*parent)),
            alternative_of: None,
            attachments: attachments(*text),
        }),
        Op::Select { slot } => {
            chat.select(message_id(*slot), at);
        }
        Op::Rename { title } => chat.rename(format!("title {title}"), at),
        Op::Star(starred) => chat.star(*starred, at),
        Op::DeleteChat => chat.delete(at),
    }
}

fn three_states(steps: &[Step]) -> (Chat, Chat, Chat) {
    let mut world = World::new();
    world.run(steps);
    let [a, b, c]: [Chat; 3] = world.states.try_into().expect("three devices");
    (a, b, c)
}

fn fold(states: &[Chat]) -> Chat {
    let mut out = states[0].clone();
    for s in &states[1..] {
        out.merge(s);
    }
    out
}

fn order_key(chat: &Chat) -> Vec<(Hlc, MessageId)> {
    chat.messages().iter().map(|m| (m.created, m.id)).collect()
}

/// One delivery to replica `to`: a state from the pool, or another
/// replica's current state (gossip).
#[derive(Clone, Debug)]
enum Delivery {
    Pool { to: Index, state: Index },
    Gossip { to: Index, from: Index },
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![
        3 => (any::<Index>(), any::<Index>()).prop_map(|(to, state)| Delivery::Pool { to, state }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(to, from)| Delivery::Gossip { to, from }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn lww_register_merge_is_a_semilattice_even_with_equal_stamps(
        writes in proptest::collection::vec((0u64..3, 0u64..2, 0u8..4), 3),
    ) {
        // Stamps drawn from a tiny set so equal stamps with different values
        // (only possible in hand-built states) occur often.
        let [a, b, c]: [Lww<u8>; 3] = writes
            .iter()
            .map(|(ms, dev, v)| Lww::new(*v, Hlc::new(*ms, 0, DeviceId(*dev))))
            .collect::<Vec<_>>()
            .try_into()
            .expect("three registers");
        let merged = |x: &Lww<u8>, y: &Lww<u8>| {
            let mut out = x.clone();
            out.merge(y);
            out
        };
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
        let top = merged(&merged(&a, &b), &c);
        prop_assert!([&a, &b, &c].iter().all(|r| (r.at, r.value) <= (top.at, top.value)));
    }

    #[test]
    fn merge_is_commutative(steps in steps(40)) {
        let (a, b, c) = three_states(&steps);
        prop_assert_eq!(Chat::merged(&a, &b), Chat::merged(&b, &a));
        prop_assert_eq!(Chat::merged(&b, &c), Chat::merged(&c, &b));
        prop_assert_eq!(Chat::merged(&a, &c), Chat::merged(&c, &a));
    }

    #[test]
    fn merge_is_associative(steps in steps(40)) {
        let (a, b, c) = three_states(&steps);
        prop_assert_eq!(
            Chat::merged(&Chat::merged(&a, &b), &c),
            Chat::merged(&a, &Chat::merged(&b, &c))
        );
        prop_assert_eq!(
            Chat::merged(&Chat::merged(&c, &a), &b),
            Chat::merged(&c, &Chat::merged(&a, &b))
        );
    }

    #[test]
    fn merge_is_idempotent(steps in steps(40)) {
        let (a, b, _) = three_states(&steps);
        prop_assert_eq!(Chat::merged(&a, &a), a.clone());
        let ab = Chat::merged(&a, &b);
        prop_assert_eq!(Chat::merged(&ab, &a), ab.clone());
        prop_assert_eq!(Chat::merged(&ab, &b), ab.clone());
        prop_assert_eq!(Chat::merged(&ab, &ab), ab);
    }

    #[test]
    fn replicas_receiving_states_in_any_order_with_duplicates_converge(
        steps in steps(30),
        replicas in 3usize..=5,
        deliveries in proptest::collection::vec(delivery(), 0..60),
        final_orders in proptest::collection::vec(any::<u64>(), 5 * 64),
    ) {
        let mut world = World::new();
        world.run(&steps);
        let pool = world.history;
        let expected = fold(&pool);

        let mut nodes = vec![pool[0].clone(); replicas];
        for d in &deliveries {
            match d {
                Delivery::Pool { to, state } => {
                    let to = to.index(replicas);
                    nodes[to].merge(&pool[state.index(pool.len())]);
                }
                Delivery::Gossip { to, from } => {
                    let incoming = nodes[from.index(replicas)].clone();
                    nodes[to.index(replicas)].merge(&incoming);
                }
            }
        }
        // Then every replica receives every pool state once more, each in
        // its own random order.
        for (r, node) in nodes.iter_mut().enumerate() {
            let mut order: Vec<usize> = (0..pool.len()).collect();
            order.sort_by_key(|i| (final_orders[(r * 64 + i) % final_orders.len()], *i));
            for i in order {
                node.merge(&pool[i]);
            }
        }
        for node in &nodes {
            prop_assert_eq!(node, &expected);
            prop_assert_eq!(order_key(node), order_key(&expected));
        }
    }

    #[test]
    fn two_devices_adding_messages_offline_keep_every_message(
        texts_a in proptest::collection::vec("[a-z]{1,8}", 0..20),
        texts_b in proptest::collection::vec("[a-z]{1,8}", 0..20),
        walls in proptest::collection::vec(0u64..5, 40),
    ) {
        let wall = Arc::new(AtomicU64::new(0));
        let (wa, wb) = (wall.clone(), wall.clone());
        let laptop = Clock::with_time_source(DeviceId(1), Box::new(move || wa.load(Ordering::SeqCst)));
        let phone = Clock::with_time_source(DeviceId(2), Box::new(move || wb.load(Ordering::SeqCst)));
        let base = Chat::new(chat_id(), "shared", Hlc::new(0, 0, DeviceId(0)));
        let (mut a, mut b) = (base.clone(), base);
        let mut ids_a = Vec::new();
        let mut ids_b = Vec::new();
        for (i, text) in texts_a.iter().enumerate() {
            wall.store(walls[i], Ordering::SeqCst);
            ids_a.push(a.add_message(Role::User, format!("a:{text}"), laptop.tick()));
        }
        for (i, text) in texts_b.iter().enumerate() {
            wall.store(walls[20 + i], Ordering::SeqCst);
            ids_b.push(b.add_message(Role::Assistant, format!("b:{text}"), phone.tick()));
        }
        let ab = Chat::merged(&a, &b);
        prop_assert_eq!(&ab, &Chat::merged(&b, &a));
        prop_assert_eq!(ab.message_count(), texts_a.len() + texts_b.len());
        let shown: Vec<MessageId> = ab.messages().iter().map(|m| m.id).collect();
        // Each device's messages keep their own order, interleaved by stamp.
        let only = |ids: &[MessageId]| shown.iter().filter(|id| ids.contains(id)).copied().collect::<Vec<_>>();
        prop_assert_eq!(only(&ids_a), ids_a);
        prop_assert_eq!(only(&ids_b), ids_b);
        let mut contents: Vec<String> = ab.messages().iter().map(|m| m.content().to_string()).collect();
        contents.sort();
        let mut written: Vec<String> = texts_a.iter().map(|t| format!("a:{t}"))
            .chain(texts_b.iter().map(|t| format!("b:{t}")))
            .collect();
        written.sort();
        prop_assert_eq!(contents, written);
    }

    #[test]
    fn message_order_is_total_and_the_same_on_every_replica(steps in steps(50)) {
        let mut world = World::new();
        world.run(&steps);
        let (a, b, c) = (&world.states[0], &world.states[1], &world.states[2]);
        // The same converged state reached by different merge orders.
        let replicas = [
            Chat::merged(&Chat::merged(a, b), c),
            Chat::merged(&Chat::merged(c, a), b),
            Chat::merged(&Chat::merged(b, c), a),
        ];
        let reference = order_key(&replicas[0]);
        for replica in &replicas {
            let key = order_key(replica);
            prop_assert_eq!(&key, &reference);
            let contents: Vec<&str> = replica.messages().iter().map(|m| m.content()).collect();
            let expected: Vec<&str> = replicas[0].messages().iter().map(|m| m.content()).collect();
            prop_assert_eq!(contents, expected);
        }
        let merged = &replicas[0];
        // Every live message of every branch is in the tree exactly once,
        // the current path is part of it, and nothing shows twice.
        let mut live: Vec<MessageId> = merged.messages.values().filter(|m| !m.is_deleted()).map(|m| m.id).collect();
        live.sort();
        let mut in_tree: Vec<MessageId> = merged.tree().iter().map(|e| e.message.id).collect();
        in_tree.sort();
        prop_assert_eq!(&in_tree, &live);
        let mut on_path: Vec<MessageId> = reference.iter().map(|(_, id)| *id).collect();
        on_path.sort();
        let shown = on_path.len();
        on_path.dedup();
        prop_assert_eq!(on_path.len(), shown);
        prop_assert!(on_path.iter().all(|id| live.contains(id)));
        let flagged: Vec<MessageId> = merged.tree().iter().filter(|e| e.on_path).map(|e| e.message.id).collect();
        prop_assert_eq!(flagged.len(), shown);
        for entry in merged.path() {
            prop_assert!(entry.position >= 1 && entry.position <= entry.alternatives);
            prop_assert_eq!(merged.alternatives(entry.message.id).len(), entry.alternatives);
        }
        if !merged.is_branched() {
            // A flat chat: strictly increasing, every pair ordered, no
            // ties, and every live message shown.
            prop_assert!(reference.windows(2).all(|w| w[0] < w[1]), "{:?}", reference);
            prop_assert_eq!(reference.len(), live.len());
        }
    }

    #[test]
    fn devices_appending_to_one_branch_offline_keep_every_message_on_the_path(
        base_steps in steps(20),
        texts_a in proptest::collection::vec("[a-z]{1,8}", 0..10),
        texts_b in proptest::collection::vec("[a-z]{1,8}", 0..10),
    ) {
        let mut world = World::new();
        world.run(&base_steps);
        let base = world.states[0].clone();
        prop_assume!(!base.is_deleted());
        let (mut a, mut b) = (base.clone(), base.clone());
        let before: Vec<MessageId> = base.messages().iter().map(|m| m.id).collect();
        let mut written = Vec::new();
        for text in &texts_a {
            written.push(a.add_message(Role::User, format!("a:{text}"), world.clocks[0].tick()));
        }
        for text in &texts_b {
            written.push(b.add_message(Role::User, format!("b:{text}"), world.clocks[1].tick()));
        }
        let merged = Chat::merged(&a, &b);
        prop_assert_eq!(&merged, &Chat::merged(&b, &a));
        let shown: Vec<MessageId> = merged.messages().iter().map(|m| m.id).collect();
        for id in written.iter().chain(&before) {
            prop_assert!(shown.contains(id), "{id:?} left the current path");
        }
    }

    #[test]
    fn garbage_collection_after_convergence_keeps_the_laws(
        before in steps(40),
        horizon_ms in 0u64..45,
        after in steps(30),
    ) {
        let mut world = World::new();
        world.run(&before);
        let converged = fold(&world.states);
        let horizon = Hlc::new(horizon_ms, 0, DeviceId(0));

        // Every replica converges, then collects garbage with the same horizon.
        let collected: Vec<Chat> = (0..DEVICES)
            .map(|_| {
                let mut c = converged.clone();
                c.collect_garbage(horizon);
                c
            })
            .collect();
        prop_assert!(collected.windows(2).all(|w| w[0] == w[1]));
        let gc = &collected[0];
        // Only old tombstones go; what users see is untouched.
        prop_assert_eq!(order_key(gc), order_key(&converged));
        prop_assert_eq!(gc.title(), converged.title());
        prop_assert_eq!(gc.is_starred(), converged.is_starred());
        prop_assert_eq!(gc.is_deleted(), converged.is_deleted());
        // Old tombstones go, unless another message follows or replaces
        // them (they place it).
        let placing = |id: &MessageId| {
            gc.selected.value == Some(*id)
                || gc
                    .messages
                    .values()
                    .any(|m| m.parent == Some(*id) || m.alternative_of == Some(*id))
        };
        prop_assert!(gc
            .messages
            .values()
            .all(|m| m.deleted.is_none_or(|d| d >= horizon) || placing(&m.id)));
        // A late duplicate of the pre-collection state is harmless once the
        // replica collects again.
        let mut redelivered = Chat::merged(gc, &converged);
        redelivered.collect_garbage(horizon);
        prop_assert_eq!(&redelivered, gc);

        // Devices keep working from the collected state; the laws still hold.
        let mut world = World::from_states(collected);
        world.run(&after);
        let (a, b, c) = (&world.states[0], &world.states[1], &world.states[2]);
        prop_assert_eq!(Chat::merged(a, b), Chat::merged(b, a));
        prop_assert_eq!(
            Chat::merged(&Chat::merged(a, b), c),
            Chat::merged(a, &Chat::merged(b, c))
        );
        prop_assert_eq!(Chat::merged(a, a), a.clone());
        let all = fold(&world.states);
        let mut reversed = world.states.clone();
        reversed.reverse();
        prop_assert_eq!(&all, &fold(&reversed));
        // A second collection on every converged replica agrees too.
        let mut x = all.clone();
        let mut y = fold(&reversed);
        x.collect_garbage(horizon);
        y.collect_garbage(horizon);
        prop_assert_eq!(x, y);
    }
}

#[test]
fn a_deleted_chat_converges_to_the_same_tombstone_whatever_was_written_concurrently() {
    let mut world = World::new();
    world.run(&[
        Step::Local {
            device: 0,
            wall: 5,
            op: Op::Add {
                slot: 0,
                role: 0,
                text: 1,
            },
        },
        Step::Sync { from: 0, to: 1 },
        Step::Local {
            device: 1,
            wall: 6,
            op: Op::DeleteChat,
        },
        Step::Local {
            device: 0,
            wall: 9,
            op: Op::Rename { title: 2 },
        },
        Step::Local {
            device: 2,
            wall: 9,
            op: Op::Star(true),
        },
    ]);
    let merged = fold(&world.states);
    assert!(merged.is_deleted());
    assert_eq!(merged.message_count(), 0);
    assert_eq!(merged.title(), "");
    assert!(!merged.is_starred());
    assert!(merged.messages.is_empty());
}

/// Found by CI: the selection named a deleted message whose line placed the
/// current path among two alternatives; collecting that tombstone moved the
/// path to the other alternative.
#[test]
fn collecting_garbage_keeps_a_deleted_selected_message_and_the_path_it_places() {
    let mut world = World::new();
    world.run(&[
        Step::Local {
            device: 2,
            wall: 22,
            op: Op::Add {
                slot: 1,
                role: 0,
                text: 0,
            },
        },
        Step::Local {
            device: 1,
            wall: 14,
            op: Op::Alternative {
                slot: 3,
                of: 2,
                text: 0,
            },
        },
        Step::Local {
            device: 0,
            wall: 0,
            op: Op::Import {
                slot: 2,
                text: 0,
                written: 0,
            },
        },
        Step::Sync { from: 2, to: 1 },
        Step::Local {
            device: 1,
            wall: 0,
            op: Op::DeleteMessage { slot: 1 },
        },
        Step::Local {
            device: 2,
            wall: 0,
            op: Op::Select { slot: 1 },
        },
    ]);
    let converged = fold(&world.states);
    let mut collected = converged.clone();
    collected.collect_garbage(Hlc::new(23, 0, DeviceId(0)));
    assert_eq!(collected.selected.value, Some(message_id(1)));
    assert!(collected.messages.contains_key(&message_id(1)));
    assert_eq!(order_key(&collected), order_key(&converged));
    assert_eq!(
        order_key(&converged)
            .iter()
            .map(|(_, id)| *id)
            .collect::<Vec<_>>(),
        vec![message_id(2)]
    );
}

/// Found by the same property: a deleted parentless message in a chain that
/// also held an explicit reply decided where its chain continuation sat
/// among the replies; collecting it moved a live message. Tombstones that
/// place nothing are now ignored by the tree, collected or not.
#[test]
fn collecting_a_chain_tombstone_does_not_move_the_messages_after_it() {
    let local = |device, wall, op| Step::Local { device, wall, op };
    let mut world = World::new();
    world.run(&[
        local(
            0,
            0,
            Op::Reply {
                slot: 0,
                parent: 2,
                text: 0,
            },
        ),
        local(
            2,
            0,
            Op::Add {
                slot: 4,
                role: 0,
                text: 0,
            },
        ),
        local(0, 0, Op::Select { slot: 0 }),
        local(2, 0, Op::DeleteMessage { slot: 4 }),
        local(
            0,
            0,
            Op::Add {
                slot: 3,
                role: 0,
                text: 0,
            },
        ),
        local(
            1,
            1,
            Op::Add {
                slot: 1,
                role: 0,
                text: 0,
            },
        ),
    ]);
    let converged = fold(&world.states);
    let mut collected = converged.clone();
    collected.collect_garbage(Hlc::new(1, 0, DeviceId(0)));
    assert!(!collected.messages.contains_key(&message_id(4)));
    assert_eq!(order_key(&collected), order_key(&converged));
    assert_eq!(order_key(&converged).len(), 3);
}
