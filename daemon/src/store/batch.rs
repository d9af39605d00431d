//! The store's trees, the [`Batch`] of writes and the [`CommitOutcome`].

use sled::IVec;

/// The trees of the store: one sled tree each, all in one sled `Db`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    /// Per-chat records (auth, config, PFS, seq).
    Chats,
    /// Outgoing messages kept until acknowledged, by (chat, out_raw).
    Outbox,
    /// Peer messages waiting ahead of a hole, by (chat, seq).
    Gap,
    /// Events for the application, by (chat, index).
    Inbox,
    /// Incoming updates taken from Telegram but not processed yet.
    Inbound,
    /// The application's requests, kept for idempotent retries.
    Requests,
    /// An index over the requests.
    RequestIndex,
    /// The Telegram session (auth keys, update state).
    Session,
    /// The store's own facts (layout version and the like).
    Meta,
}

impl Tree {
    /// Every tree, in declaration order.
    pub const ALL: [Tree; 9] = [
        Tree::Chats,
        Tree::Outbox,
        Tree::Gap,
        Tree::Inbox,
        Tree::Inbound,
        Tree::Requests,
        Tree::RequestIndex,
        Tree::Session,
        Tree::Meta,
    ];

    /// The sled tree's name.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Chats => "chats",
            Tree::Outbox => "outbox",
            Tree::Gap => "gap",
            Tree::Inbox => "inbox",
            Tree::Inbound => "inbound",
            Tree::Requests => "requests",
            Tree::RequestIndex => "request_index",
            Tree::Session => "session",
            Tree::Meta => "meta",
        }
    }

    /// Its position in [`Tree::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What one op does.
#[derive(Clone, Debug)]
pub(crate) enum OpKind {
    Put(IVec),
    Remove,
    PutIfAbsent(IVec),
}

/// One write of a batch.
#[derive(Clone, Debug)]
pub(crate) struct Op {
    pub(crate) tree: Tree,
    pub(crate) key: IVec,
    pub(crate) kind: OpKind,
}

/// Writes applied together, all or nothing, in the order they were added.
///
/// A later op sees the earlier ops of the same batch (a `put_if_absent` after a `put` of the
/// same key keeps the put's value).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Set `key` to `value` in `tree`.
    pub fn put(
        &mut self,
        tree: Tree,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> &mut Batch {
        self.push(tree, key, OpKind::Put(IVec::from(value.as_ref())))
    }

    /// Remove `key` from `tree` (nothing if it is absent).
    pub fn remove(&mut self, tree: Tree, key: impl AsRef<[u8]>) -> &mut Batch {
        self.push(tree, key, OpKind::Remove)
    }

    /// Set `key` to `value` in `tree` unless the key exists, whose value is then kept. The
    /// [`CommitOutcome`] says which happened.
    pub fn put_if_absent(
        &mut self,
        tree: Tree,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> &mut Batch {
        self.push(tree, key, OpKind::PutIfAbsent(IVec::from(value.as_ref())))
    }

    /// `later`'s ops after this batch's, in their order (what committing the two one after
    /// the other would leave, in one batch).
    pub fn append(&mut self, later: Batch) -> &mut Batch {
        self.ops.extend(later.ops);
        self
    }

    /// No ops.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub(crate) fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The trees the batch writes, each once, in [`Tree::ALL`] order.
    pub(crate) fn trees(&self) -> Vec<Tree> {
        let mut trees: Vec<Tree> = self.ops.iter().map(|op| op.tree).collect();
        trees.sort_unstable();
        trees.dedup();
        trees
    }

    fn push(&mut self, tree: Tree, key: impl AsRef<[u8]>, kind: OpKind) -> &mut Batch {
        self.ops.push(Op {
            tree,
            key: IVec::from(key.as_ref()),
            kind,
        });
        self
    }
}

/// What a committed batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    inserted: Vec<bool>,
}

impl CommitOutcome {
    pub(crate) fn new(inserted: Vec<bool>) -> CommitOutcome {
        CommitOutcome { inserted }
    }

    /// For each `put_if_absent` of the batch, in order: whether it inserted (`false`: the key
    /// existed and its value was kept).
    pub fn inserted(&self) -> &[bool] {
        &self.inserted
    }
}
