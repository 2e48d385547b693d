//! Conversions between the WIT-generated types and the store's own types: the store knows
//! nothing of the component model, and the bindings nothing of the store.

use crate::bindings::records as wit_records;
use crate::bindings::types as wit;
use crate::store;

pub fn record_from_wit(r: wit::Record) -> store::Record {
    store::Record {
        external_id: r.external_id,
        revision: r.revision,
        name: r.name,
        path: r.path.map(|p| store::RecordPath {
            display: p.display,
            lower: p.lower,
        }),
        parent_external_id: r.parent_external_id,
        kind: match r.kind {
            wit::RecordKind::File => store::RecordKind::File,
            wit::RecordKind::Folder => store::RecordKind::Folder,
            wit::RecordKind::Item => store::RecordKind::Item,
        },
        mime_type: r.mime_type,
        size: r.size,
        content_hash: r.content_hash,
        client_modified: r.client_modified,
        server_modified: r.server_modified,
        is_downloadable: r.is_downloadable,
        export_format: r.export_format,
        web_url: r.web_url,
        is_shared: r.is_shared,
        shared_url: r.shared_url,
    }
}

pub fn record_to_wit(r: store::Record) -> wit::Record {
    wit::Record {
        external_id: r.external_id,
        revision: r.revision,
        name: r.name,
        path: r.path.map(|p| wit::RecordPath {
            display: p.display,
            lower: p.lower,
        }),
        parent_external_id: r.parent_external_id,
        kind: match r.kind {
            store::RecordKind::File => wit::RecordKind::File,
            store::RecordKind::Folder => wit::RecordKind::Folder,
            store::RecordKind::Item => wit::RecordKind::Item,
        },
        mime_type: r.mime_type,
        size: r.size,
        content_hash: r.content_hash,
        client_modified: r.client_modified,
        server_modified: r.server_modified,
        is_downloadable: r.is_downloadable,
        export_format: r.export_format,
        web_url: r.web_url,
        is_shared: r.is_shared,
        shared_url: r.shared_url,
    }
}

pub fn change_from_wit(c: wit_records::Change) -> store::Change {
    use wit_records::Change as W;
    match c {
        W::Upsert(u) => store::Change::Upsert {
            record: record_from_wit(u.record),
            event: match u.event {
                wit_records::ChangeKind::Created => store::ChangeKind::Created,
                wit_records::ChangeKind::Content => store::ChangeKind::Content,
                wit_records::ChangeKind::Metadata => store::ChangeKind::Metadata,
                wit_records::ChangeKind::ContentAndMetadata => {
                    store::ChangeKind::ContentAndMetadata
                }
                wit_records::ChangeKind::Unchanged => store::ChangeKind::Unchanged,
            },
        },
        W::Remove(id) => store::Change::Remove(id),
        W::Replace(r) => store::Change::Replace {
            path_lower: r.path_lower,
            new_external_id: r.new_external_id,
            keep_children: r.keep_children,
        },
        W::RemoveSubtree(p) => store::Change::RemoveSubtree(p),
        W::MarkAllPending => store::Change::MarkAllPending,
        W::Purge => store::Change::Purge,
    }
}

pub fn sync_point_from_wit(p: wit_records::SyncPoint) -> store::SyncPoint {
    store::SyncPoint {
        position: p.position,
        status: store::SyncStatus {
            phase: match p.status.phase {
                wit_records::SyncPhase::Listing => store::SyncPhase::Listing,
                wit_records::SyncPhase::Current => store::SyncPhase::Current,
            },
            detail: p.status.detail,
        },
    }
}

pub fn apply_summary_to_wit(s: store::ApplySummary) -> wit_records::ApplySummary {
    wit_records::ApplySummary {
        created: s.created,
        content_updates: s.content_updates,
        metadata_updates: s.metadata_updates,
        deletions: s.deletions,
    }
}

pub fn user_from_wit(u: wit::User) -> store::User {
    store::User {
        external_id: u.external_id,
        email: u.email,
        display_name: u.display_name,
    }
}

pub fn group_from_wit(g: wit::RecordGroup) -> store::RecordGroup {
    store::RecordGroup {
        external_id: g.external_id,
        name: g.name,
        kind: match g.kind {
            wit::GroupKind::Drive => store::GroupKind::Drive,
            wit::GroupKind::Folder => store::GroupKind::Folder,
            wit::GroupKind::Other => store::GroupKind::Other,
        },
    }
}

pub fn permission_from_wit(p: wit::Permission) -> store::Permission {
    store::Permission {
        principal_external_id: p.principal_external_id,
        role: match p.role {
            wit::Role::Owner => store::Role::Owner,
            wit::Role::Writer => store::Role::Writer,
            wit::Role::Commenter => store::Role::Commenter,
            wit::Role::Reader => store::Role::Reader,
        },
    }
}
