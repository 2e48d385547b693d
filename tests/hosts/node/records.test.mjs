// The in-memory records store against the contract's documented semantics (node --test; run by
// tests/hosts.rs). Values are shaped as jco hands them over.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { RecordsStore, StoreFailure, compareBytes } from './records.mjs';

function rec(id, path, kind = 'file') {
  return {
    externalId: id,
    revision: undefined,
    name: path ? path.slice(path.lastIndexOf('/') + 1) : id,
    path: path === undefined ? undefined : { display: path, lower: path.toLowerCase() },
    parentExternalId: undefined,
    kind,
    mimeType: 'application/octet-stream',
    size: 0n,
    contentHash: undefined,
    clientModified: undefined,
    serverModified: undefined,
    isDownloadable: true,
    exportFormat: undefined,
    webUrl: undefined,
    isShared: false,
    sharedUrl: undefined,
  };
}
const up = (record, event = 'created') => ({ tag: 'upsert', val: { record, event } });
const point = (position, phase = 'current') => ({ position, status: { phase, detail: position } });
const ids = (records) => records.map((r) => r.externalId);
const kinds = (store) => store.events().map((e) => `${e.kind} ${e.externalId}`);

test('byte order is UTF-8 order, not UTF-16 order', () => {
  // U+FF5E (3 UTF-8 bytes, EF BD 9E) sorts before U+1F600 (4 bytes, F0 9F 98 80), although its
  // UTF-16 unit is above the emoji's surrogates.
  assert.ok('\uff5e' > '\u{1f600}', "JavaScript's own order is the other way");
  assert.ok(compareBytes('\uff5e', '\u{1f600}') < 0);
  assert.ok(compareBytes('/a', '/a/b') < 0);
  assert.ok(compareBytes('/a/b', '/a0') < 0);
  assert.equal(compareBytes('/é', '/é'), 0);
  const words = ['/\u{1f600}', '/\uff5e', '/z', '/a'];
  assert.deepEqual(
    [...words].sort(compareBytes),
    [...words].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))),
  );
});

test('a failing batch applies nothing, its sync point and events included', () => {
  const store = new RecordsStore();
  store.apply([up(rec('id:a', '/A'))], point('p1'));
  assert.throws(
    () => store.apply([up(rec('id:z', '/z')), { tag: 'remove', val: 'id:a' }, up(rec('id:b', '/Z'))], point('p2')),
    (e) => e instanceof StoreFailure && e.tag === 'conflict',
  );
  assert.deepEqual(ids(store.liveRecords()), ['id:a']);
  assert.equal(store.getSyncPoint(), 'p1');
  assert.deepEqual(kinds(store), ['created id:a']);
  assert.deepEqual(store.getRecords(['id:a', 'id:z']).map((s) => s.pendingRemoval), [false]);
});

test('one event per upsert as the connector says, none for unchanged; summary counts', () => {
  const store = new RecordsStore();
  const s = store.apply(
    [
      up(rec('id:1', '/1'), 'created'),
      up(rec('id:2', '/2'), 'content'),
      up(rec('id:3', '/3'), 'metadata'),
      up(rec('id:4', '/4'), 'content-and-metadata'),
      up(rec('id:5', '/5'), 'unchanged'),
    ],
    undefined,
  );
  assert.deepEqual(s, { created: 1n, contentUpdates: 2n, metadataUpdates: 2n, deletions: 0n });
  assert.equal(store.events().length, 4);
  assert.equal(store.getSyncPoint(), undefined, 'no sync point given, none stored');
});

test('removal is two-phase: a mark, a restore by upsert, a purge with one event each', () => {
  const store = new RecordsStore();
  store.apply([up(rec('id:d', '/D', 'folder')), up(rec('id:x', '/D/x')), up(rec('id:y', '/D/e/y')), up(rec('id:o', '/Do'))], undefined);
  const s1 = store.apply([{ tag: 'remove-subtree', val: '/d' }], point('listing', 'listing'));
  assert.equal(s1.deletions, 0n);
  assert.deepEqual(ids(store.liveRecords()), ['id:o'], '/do is not a descendant of /d');
  // Restored: an update, not a creation, and it no longer goes on purge.
  store.apply([up(rec('id:x', '/D/x'), 'metadata')], undefined);
  const s2 = store.apply([{ tag: 'purge' }], point('done'));
  assert.equal(s2.deletions, 2n);
  assert.deepEqual(ids(store.liveRecords()), ['id:o', 'id:x']);
  // Children before parents.
  assert.deepEqual(kinds(store).slice(-2), ['deleted id:y', 'deleted id:d']);
  assert.equal(store.syncStatus().phase, 'current');
});

test('remove marks one record; an unknown id is ignored', () => {
  const store = new RecordsStore();
  store.apply([up(rec('id:d', '/d', 'folder')), up(rec('id:x', '/d/x')), up(rec('id:n', undefined, 'item'))], undefined);
  store.apply([{ tag: 'remove', val: 'id:d' }, { tag: 'remove', val: 'id:n' }, { tag: 'remove', val: 'id:nope' }], undefined);
  assert.deepEqual(ids(store.liveRecords()), ['id:x']);
});

test('replace: keep-children marks only the occupant; otherwise its subtree; never the newcomer', () => {
  const store = new RecordsStore();
  store.apply([up(rec('id:f', '/f', 'folder')), up(rec('id:c', '/f/c'))], undefined);
  store.apply([{ tag: 'replace', val: { pathLower: '/f', newExternalId: 'id:f', keepChildren: false } }], undefined);
  assert.deepEqual(ids(store.liveRecords()), ['id:c', 'id:f'], 'the newcomer itself is kept');
  store.apply(
    [{ tag: 'replace', val: { pathLower: '/f', newExternalId: 'id:g', keepChildren: true } }, up(rec('id:g', '/f', 'folder'))],
    undefined,
  );
  assert.deepEqual(ids(store.liveRecords()), ['id:c', 'id:g']);
  store.apply([{ tag: 'replace', val: { pathLower: '/f', newExternalId: 'id:h', keepChildren: false } }], undefined);
  assert.deepEqual(ids(store.liveRecords()), []);
});

test('a pending record does not hold its path', () => {
  const store = new RecordsStore();
  store.apply([up(rec('id:a', '/p'))], undefined);
  store.apply([{ tag: 'mark-all-pending' }, up(rec('id:b', '/p'))], undefined);
  assert.deepEqual(store.findByPaths(['/p', '/q']).map((r) => r?.externalId), ['id:b', undefined]);
  // Restoring the old one onto the taken path is a conflict.
  assert.throws(() => store.apply([up(rec('id:a', '/p'), 'metadata')], undefined), (e) => e.tag === 'conflict');
});

test('list-records and list-subtree page in byte order', () => {
  const store = new RecordsStore();
  const names = ['/r', '/r/b', '/r/a', '/r/\u{1f600}', '/r/\uff5e', '/r/a/deep', '/r0', '/rest'];
  store.apply(names.map((p, i) => up(rec(`id:${String(i).padStart(2, '0')}`, p))), undefined);
  const page1 = store.listSubtree('/r', undefined, 3);
  const page2 = store.listSubtree('/r', page1.at(-1).path.lower, 10);
  assert.deepEqual(
    [...page1, ...page2].map((r) => r.path.lower),
    ['/r/a', '/r/a/deep', '/r/b', '/r/\uff5e', '/r/\u{1f600}'],
  );
  const all = [...store.listRecords(undefined, 5), ...store.listRecords('id:04', 100)];
  assert.deepEqual(ids(all), names.map((_, i) => `id:${String(i).padStart(2, '0')}`));
});

test('clear forgets records and the sync point, keeps the events', () => {
  const store = new RecordsStore();
  store.apply([up(rec('id:a', '/a'))], point('p'));
  store.clear();
  assert.equal(store.getSyncPoint(), undefined);
  assert.deepEqual(store.liveRecords(), []);
  assert.equal(store.events().length, 1);
});
