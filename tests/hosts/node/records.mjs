// The tenant's records store, in memory, as `wit/connector.wit` documents `records` and
// `paths` (contract pipeshub:connector@0.2.0). One store per host process = one tenant.
//
// Values are the shapes jco gives and takes for the WIT types: records have camelCase fields,
// `option<T>` is `T | undefined`, `u64` is a BigInt, enums are kebab-case strings and variants
// are `{ tag, val }`.
//
// What the contract asks of a store, and how this one does it:
// - `apply` is all-or-nothing: every mutation of a batch pushes its inverse on an undo log, and
//   a failing change (a conflict, a malformed change) runs the log backwards, drops the
//   batch's events and leaves the sync point as it was.
// - Removal is two-phase: `remove`, `replace`, `remove-subtree` and `mark-all-pending` only
//   mark records pending; an upsert of the same id restores one; `purge` deletes what is still
//   pending with one `deleted` event per record.
// - At most one *live* record per `path.lower` (pending records do not hold their path).
// - Paths and ids are ordered by their UTF-8 bytes (`compareBytes`), never by JavaScript's
//   default string order, which compares UTF-16 code units and puts U+E000..U+FFFF after
//   astral characters such as emoji (the reverse of their byte order).

/** A store failure the contract names (`store-error`); `apply` rolls back on it. */
export class StoreFailure extends Error {
  constructor(tag, message) {
    super(message);
    this.tag = tag; // 'conflict' | 'storage' | 'invalid'
  }
  toWit() {
    return { tag: this.tag, val: this.message };
  }
}

/**
 * Byte order of the UTF-8 encodings of two strings, without encoding them. UTF-8 byte order is
 * code point order; UTF-16 code unit order agrees with it except that surrogates (U+D800 to
 * U+DFFF, the halves of every character above U+FFFF) must sort after U+E000 to U+FFFF.
 */
export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      if (x >= 0xd800 && y >= 0xd800) {
        x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
        y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
      }
      return x < y ? -1 : 1;
    }
  }
  return a.length - b.length;
}

/** Index of the first element of the sorted `list` that is greater than (or, when `inclusive`,
 * equal to) `key`, in byte order. */
function bound(list, key, inclusive) {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const c = compareBytes(list[mid], key);
    if (c < 0 || (c === 0 && !inclusive)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const EVENT_OF_CHANGE_KIND = {
  created: 'created',
  content: 'content',
  metadata: 'metadata',
  'content-and-metadata': 'content-and-metadata',
  unchanged: null,
};

export class RecordsStore {
  /** external id -> { record, pending } (entries are replaced, never mutated: see #set). */
  #entries = new Map();
  /** path.lower -> external id, for live records that have a path. */
  #livePaths = new Map();
  /** The last sync point applied: { position, status: { phase, detail } }, or null. */
  #syncPoint = null;
  /** The ordered event stream: { seq, externalId, kind }. Survives `clear`. */
  #events = [];
  #owner = null;
  /** Sorted views, rebuilt lazily after a mutation (list-records, list-subtree, purge). */
  #sortedLiveIds = null;
  #sortedLivePaths = null;

  // --- the `records` interface -------------------------------------------------------------

  /** `apply(changes, sync-point)`: the summary, or throws a StoreFailure (nothing applied). */
  apply(changes, syncPoint) {
    const undo = [];
    const eventsBefore = this.#events.length;
    const summary = { created: 0n, contentUpdates: 0n, metadataUpdates: 0n, deletions: 0n };
    try {
      for (const change of changes) this.#applyOne(change, summary, undo);
    } catch (e) {
      for (let i = undo.length - 1; i >= 0; i--) undo[i]();
      this.#events.length = eventsBefore;
      throw e;
    }
    // The sync point is stored with the batch; a batch without one keeps the stored one.
    if (syncPoint !== undefined && syncPoint !== null) {
      this.#syncPoint = {
        position: syncPoint.position,
        status: { phase: syncPoint.status.phase, detail: syncPoint.status.detail },
      };
    }
    return summary;
  }

  getSyncPoint() {
    return this.#syncPoint?.position;
  }

  /** The stored status, for the driver's `sync-status` command. */
  syncStatus() {
    return this.#syncPoint?.status ?? null;
  }

  getRecords(externalIds) {
    const out = [];
    for (const id of externalIds) {
      const entry = this.#entries.get(id);
      if (entry) out.push({ record: entry.record, pendingRemoval: entry.pending });
    }
    return out;
  }

  listRecords(after, limit) {
    const ids = this.#liveIdsSorted();
    const start = after === undefined ? 0 : bound(ids, after, false);
    return ids.slice(start, start + limit).map((id) => this.#entries.get(id).record);
  }

  listShared() {
    const out = [];
    for (const entry of this.#entries.values()) {
      if (!entry.pending && entry.record.isShared) out.push(entry.record);
    }
    return out;
  }

  putOwner(owner, group, permissions) {
    this.#owner = { owner, group, permissions };
  }

  /** Forget everything the connector stored (records, sync point, owner); keep the events. */
  clear() {
    this.#entries.clear();
    this.#livePaths.clear();
    this.#syncPoint = null;
    this.#owner = null;
    this.#invalidate();
  }

  // --- the `paths` interface ---------------------------------------------------------------

  findByPaths(pathsLower) {
    return pathsLower.map((p) => {
      const id = this.#livePaths.get(p);
      return id === undefined ? undefined : this.#entries.get(id).record;
    });
  }

  /** Live descendants of `pathLower` in byte order of path, after `after`, at most `limit`. */
  listSubtree(pathLower, after, limit) {
    const paths = this.#livePathsSorted();
    const prefix = pathLower + '/';
    // Everything that starts with `prefix` is one contiguous run in byte order.
    let i = bound(paths, prefix, true);
    if (after !== undefined) i = Math.max(i, bound(paths, after, false));
    const out = [];
    for (; i < paths.length && out.length < limit && paths[i].startsWith(prefix); i++) {
      out.push(this.#entries.get(this.#livePaths.get(paths[i])).record);
    }
    return out;
  }

  // --- for the driver ----------------------------------------------------------------------

  /** Live records, sorted by external id (byte order). */
  liveRecords() {
    return this.#liveIdsSorted().map((id) => this.#entries.get(id).record);
  }

  events() {
    return this.#events;
  }

  // --- changes -----------------------------------------------------------------------------

  #applyOne(change, summary, undo) {
    switch (change.tag) {
      case 'upsert':
        return this.#upsert(change.val.record, change.val.event, summary, undo);
      case 'remove': {
        // One record, never its descendants; an unknown id is ignored.
        const entry = this.#entries.get(change.val);
        if (entry && !entry.pending) this.#markPending(change.val, undo);
        return;
      }
      case 'replace': {
        const { pathLower, newExternalId, keepChildren } = change.val;
        const occupant = this.#livePaths.get(pathLower);
        // A live record at the path that already has the newcomer's id stays as it is.
        if (occupant === undefined || occupant === newExternalId) return;
        if (keepChildren) this.#markPending(occupant, undo);
        else this.#markSubtree(pathLower, undo);
        return;
      }
      case 'remove-subtree':
        return this.#markSubtree(change.val, undo);
      case 'mark-all-pending':
        for (const [id, entry] of [...this.#entries]) {
          if (!entry.pending) this.#markPending(id, undo);
        }
        return;
      case 'purge':
        return this.#purge(summary, undo);
      default:
        throw new StoreFailure('invalid', `unknown change ${JSON.stringify(change.tag)}`);
    }
  }

  #upsert(record, changeKind, summary, undo) {
    if (!record.externalId) {
      throw new StoreFailure('invalid', 'a record needs an external id');
    }
    if (record.path !== undefined && !record.path.lower) {
      throw new StoreFailure('invalid', `record ${record.externalId}: an empty path.lower`);
    }
    if (!(changeKind in EVENT_OF_CHANGE_KIND)) {
      throw new StoreFailure('invalid', `unknown change kind ${JSON.stringify(changeKind)}`);
    }
    if (record.path !== undefined) {
      const occupant = this.#livePaths.get(record.path.lower);
      if (occupant !== undefined && occupant !== record.externalId) {
        throw new StoreFailure(
          'conflict',
          `${record.path.lower} is held by ${occupant}; replace it before storing ${record.externalId}`,
        );
      }
    }
    this.#set(record.externalId, { record, pending: false }, undo);
    // The store records the kind the connector says; it does not compare old and new.
    const kind = EVENT_OF_CHANGE_KIND[changeKind];
    if (kind === null) return;
    if (kind === 'created') summary.created += 1n;
    if (kind === 'content' || kind === 'content-and-metadata') summary.contentUpdates += 1n;
    if (kind === 'metadata' || kind === 'content-and-metadata') summary.metadataUpdates += 1n;
    this.#event(record.externalId, kind);
  }

  /** Mark the live record at `pathLower` and every live descendant pending. */
  #markSubtree(pathLower, undo) {
    const prefix = pathLower + '/';
    const ids = [];
    for (const [path, id] of this.#livePaths) {
      if (path === pathLower || path.startsWith(prefix)) ids.push(id);
    }
    for (const id of ids) this.#markPending(id, undo);
  }

  #purge(summary, undo) {
    const pending = [...this.#entries].filter(([, e]) => e.pending);
    // Children before their parents (descending path), as the SQLite store emits them;
    // records without a path last, by id.
    pending.sort(([ida, a], [idb, b]) => {
      const pa = a.record.path?.lower;
      const pb = b.record.path?.lower;
      if (pa !== undefined && pb !== undefined) return compareBytes(pb, pa);
      if (pa !== undefined) return -1;
      if (pb !== undefined) return 1;
      return compareBytes(ida, idb);
    });
    for (const [id] of pending) {
      this.#set(id, undefined, undo);
      this.#event(id, 'deleted');
      summary.deletions += 1n;
    }
  }

  #markPending(id, undo) {
    const entry = this.#entries.get(id);
    this.#set(id, { record: entry.record, pending: true }, undo);
  }

  #event(externalId, kind) {
    const seq = this.#events.length === 0 ? 1 : this.#events[this.#events.length - 1].seq + 1;
    this.#events.push({ seq, externalId, kind });
  }

  /** Replace (or with `undefined`, delete) the entry of `id`, keeping the path index right,
   * and remember how to undo it. */
  #set(id, entry, undo) {
    const previous = this.#entries.get(id);
    undo.push(() => this.#setRaw(id, previous));
    this.#setRaw(id, entry);
  }

  #setRaw(id, entry) {
    const previous = this.#entries.get(id);
    const oldPath = previous && !previous.pending ? previous.record.path?.lower : undefined;
    if (oldPath !== undefined && this.#livePaths.get(oldPath) === id) this.#livePaths.delete(oldPath);
    if (entry === undefined) {
      this.#entries.delete(id);
    } else {
      this.#entries.set(id, entry);
      const newPath = entry.pending ? undefined : entry.record.path?.lower;
      if (newPath !== undefined) this.#livePaths.set(newPath, id);
    }
    this.#invalidate();
  }

  #invalidate() {
    this.#sortedLiveIds = null;
    this.#sortedLivePaths = null;
  }

  #liveIdsSorted() {
    if (this.#sortedLiveIds === null) {
      const ids = [];
      for (const [id, entry] of this.#entries) if (!entry.pending) ids.push(id);
      this.#sortedLiveIds = ids.sort(compareBytes);
    }
    return this.#sortedLiveIds;
  }

  #livePathsSorted() {
    if (this.#sortedLivePaths === null) {
      this.#sortedLivePaths = [...this.#livePaths.keys()].sort(compareBytes);
    }
    return this.#sortedLivePaths;
  }
}
