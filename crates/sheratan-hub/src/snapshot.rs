//! The registry snapshot's file format (`nodes_registry.json`).
//!
//! ```json
//! {"format":1,"written_at":"2026-11-27T08:00:00Z",
//!  "nodes":[{"id":"w1","role":"worker","addr":null,"caps":0,"fp":[2,3,4],
//!            "first_seen":"…","last_seen":"…","load":[0,4],"status":"ONLINE"}, …],
//!  "strings":["echo","sleep","0.1.0","5f2b…","{\"os\":\"linux\"}", …],
//!  "lists":[[0,1], …]}
//! ```
//!
//! Strings that many nodes share (capabilities, build ids, capability hashes, runtimes,
//! addresses) are written once in `strings` and referenced by index, and capability lists
//! once in `lists`: a fleet of one build makes a file a third the size. Capturing a node reads
//! its shared strings without cloning them and allocates nothing, so a snapshot touches
//! neither the reference counts heartbeats sit next to nor the allocator they use.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sheratan_proto::control::{Load, NodeStatus, Role};
use sheratan_store::registry::{Fingerprint, Interner, NodeRecord};
use time::OffsetDateTime;

pub const FORMAT: u32 = 1;

/// Index of a string in the snapshot's table.
type Ix = u32;

/// Where a string sits in memory: its address and length. One shared (interned) string is
/// one allocation, so most lookups never read the string itself.
type Addr = (usize, usize);

fn addr_of(s: &str) -> Addr {
    (s.as_ptr() as usize, s.len())
}

/// A multiplicative hash for addresses: they are already unique integers, and SipHash would
/// cost more than the rest of capturing a node.
#[derive(Default)]
struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type AddrMap<V> = HashMap<Addr, V, std::hash::BuildHasherDefault<AddrHasher>>;

/// The fields a node's strings come from; each remembers its last answer, because
/// neighbouring nodes usually share their strings (one build, one runtime, one address).
#[derive(Clone, Copy)]
enum Field {
    Addr = 0,
    BuildId = 1,
    CapabilityHash = 2,
    Runtime = 3,
    Capability = 4,
}

/// Assigns table indices to shared strings and capability lists. Strings are looked up by
/// address and confirmed by content, so a freed and reused address can never map to the
/// wrong string.
#[derive(Default)]
pub struct StringTable {
    by_addr: AddrMap<Ix>,
    by_content: HashMap<String, Ix>,
    strings: Vec<String>,
    last: [Option<(Addr, Ix)>; 5],
    list_index: HashMap<Box<[Ix]>, Ix>,
    lists: Vec<Box<[Ix]>>,
    /// The last capability list, by the addresses of its strings.
    last_list: Option<(Vec<Addr>, Ix)>,
}

impl StringTable {
    fn index(&mut self, field: Field, s: &str) -> Ix {
        let addr = addr_of(s);
        if let Some((last, i)) = self.last[field as usize]
            && last == addr
            && self.strings[i as usize] == s
        {
            return i;
        }
        let i = self.lookup(s, addr);
        self.last[field as usize] = Some((addr, i));
        i
    }

    fn lookup(&mut self, s: &str, addr: Addr) -> Ix {
        if let Some(&i) = self.by_addr.get(&addr)
            && self.strings[i as usize] == s
        {
            return i;
        }
        let i = match self.by_content.get(s) {
            Some(&i) => i,
            None => {
                let i = Ix::try_from(self.strings.len()).unwrap_or(Ix::MAX);
                self.strings.push(s.to_owned());
                self.by_content.insert(s.to_owned(), i);
                i
            }
        };
        self.by_addr.insert(addr, i);
        i
    }

    fn list(&mut self, items: &[Arc<str>]) -> Ix {
        if let Some((addrs, i)) = &self.last_list {
            let entries = &self.lists[*i as usize];
            let same = addrs.len() == items.len()
                && addrs.iter().zip(items).all(|(a, s)| *a == addr_of(s))
                && entries
                    .iter()
                    .zip(items)
                    .all(|(&e, s)| self.strings[e as usize] == **s);
            if same {
                return *i;
            }
        }
        let entries: Vec<Ix> = items
            .iter()
            .map(|s| self.index(Field::Capability, s))
            .collect();
        let i = match self.list_index.get(&entries[..]) {
            Some(&i) => i,
            None => {
                let i = Ix::try_from(self.lists.len()).unwrap_or(Ix::MAX);
                self.lists.push(entries.as_slice().into());
                self.list_index.insert(entries.into_boxed_slice(), i);
                i
            }
        };
        self.last_list = Some((items.iter().map(|s| addr_of(s)).collect(), i));
        i
    }

    fn fingerprint(&mut self, f: &Fingerprint) -> [Ix; 3] {
        [
            self.index(Field::BuildId, &f.build_id),
            self.index(Field::CapabilityHash, &f.capability_hash),
            self.index(Field::Runtime, &f.runtime),
        ]
    }
}

/// One node as the snapshot stores it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Row {
    id: Arc<str>,
    role: Role,
    addr: Option<Ix>,
    caps: Ix,
    fp: [Ix; 3],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base: Option<[Ix; 3]>,
    #[serde(with = "time::serde::rfc3339")]
    first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_seen: OffsetDateTime,
    load: (u32, u32),
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    spoof: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    changes: Vec<i64>,
    status: NodeStatus,
}

impl Row {
    /// Runs under the shard lock: copies plain data, indexes shared strings.
    pub fn capture(record: &NodeRecord, table: &mut StringTable) -> Row {
        Row {
            id: record.node_id.clone(),
            role: record.role,
            addr: record.addr.as_deref().map(|a| table.index(Field::Addr, a)),
            caps: table.list(&record.capabilities),
            fp: table.fingerprint(&record.current),
            base: record.baseline.as_ref().map(|b| table.fingerprint(b)),
            first_seen: record.first_seen_at,
            last_seen: record.last_seen,
            load: (record.load.inflight, record.load.capacity),
            spoof: record.spoof_suspect,
            changes: record.hash_changes.iter().copied().collect(),
            status: record.reported_status,
        }
    }
}

/// Streams a snapshot: the header, rows as they come, then the string table.
pub struct Writer<W: Write> {
    out: W,
    rows: usize,
}

impl<W: Write> Writer<W> {
    pub fn begin(mut out: W, written_at: OffsetDateTime) -> io::Result<Self> {
        let at = written_at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(io::Error::other)?;
        write!(
            out,
            "{{\"format\":{FORMAT},\"written_at\":\"{at}\",\"nodes\":["
        )?;
        Ok(Self { out, rows: 0 })
    }

    pub fn rows(&mut self, rows: &[Row]) -> io::Result<()> {
        for row in rows {
            if self.rows > 0 {
                self.out.write_all(b",")?;
            }
            serde_json::to_writer(&mut self.out, row).map_err(io::Error::other)?;
            self.rows += 1;
        }
        Ok(())
    }

    /// Writes the tables and closes the document; returns the number of rows.
    pub fn finish(mut self, table: &StringTable) -> io::Result<usize> {
        self.out.write_all(b"],\"strings\":")?;
        serde_json::to_writer(&mut self.out, &table.strings).map_err(io::Error::other)?;
        self.out.write_all(b",\"lists\":")?;
        serde_json::to_writer(&mut self.out, &table.lists).map_err(io::Error::other)?;
        self.out.write_all(b"}")?;
        Ok(self.rows)
    }
}

#[derive(Deserialize)]
struct SnapshotIn {
    format: u32,
    #[serde(with = "time::serde::rfc3339")]
    written_at: OffsetDateTime,
    nodes: Vec<Row>,
    strings: Vec<String>,
    lists: Vec<Vec<Ix>>,
}

/// A decoded snapshot: when it was written and its entries.
pub struct Loaded {
    pub written_at: OffsetDateTime,
    pub records: Vec<NodeRecord>,
}

/// Decodes a snapshot; any inconsistency (bad JSON, unknown format, an index out of range, a
/// bad node id) makes the whole file corrupt rather than half-loaded.
pub fn decode(bytes: &[u8], interner: &Interner) -> Result<Loaded, String> {
    let snapshot: SnapshotIn =
        serde_json::from_slice(bytes).map_err(|e| format!("not a registry snapshot: {e}"))?;
    if snapshot.format != FORMAT {
        return Err(format!("unknown snapshot format {}", snapshot.format));
    }
    let strings = &snapshot.strings;
    let text = |i: Ix| -> Result<Arc<str>, String> {
        strings
            .get(i as usize)
            .map(|s| interner.intern(s))
            .ok_or_else(|| format!("string index {i} out of range"))
    };
    let fingerprint = |ix: [Ix; 3]| -> Result<Fingerprint, String> {
        Ok(Fingerprint {
            build_id: text(ix[0])?,
            capability_hash: text(ix[1])?,
            runtime: text(ix[2])?,
        })
    };
    let mut records = Vec::with_capacity(snapshot.nodes.len());
    let mut seen = std::collections::HashSet::with_capacity(snapshot.nodes.len());
    for row in snapshot.nodes {
        sheratan_proto::ids::validate_node_id(&row.id)?;
        if !seen.insert(row.id.clone()) {
            return Err(format!("node {:?} appears twice", &*row.id));
        }
        if row.changes.len() > 1000 {
            return Err(format!(
                "node {:?} has an implausible change history",
                &*row.id
            ));
        }
        records.push(NodeRecord {
            node_id: interner.intern(&row.id),
            role: row.role,
            addr: row.addr.map(text).transpose()?,
            capabilities: snapshot
                .lists
                .get(row.caps as usize)
                .ok_or_else(|| format!("list index {} out of range", row.caps))?
                .iter()
                .map(|&i| text(i))
                .collect::<Result<_, _>>()?,
            current: fingerprint(row.fp)?,
            baseline: row.base.map(fingerprint).transpose()?,
            first_seen_at: row.first_seen,
            last_seen: row.last_seen,
            load: Load {
                inflight: row.load.0,
                capacity: row.load.1,
            },
            spoof_suspect: row.spoof,
            hash_changes: VecDeque::from(row.changes),
            reported_status: row.status,
            age_anchor: None,
        });
    }
    Ok(Loaded {
        written_at: snapshot.written_at,
        records,
    })
}

#[cfg(test)]
mod tests {
    use sheratan_store::registry::Observation;

    use super::*;

    #[test]
    fn round_trip_shares_strings_and_keeps_every_field() {
        let interner = Interner::default();
        let caps = vec!["echo".to_owned(), "sleep".to_owned()];
        let now = time::macros::datetime!(2026-11-27 08:00:00.123456789 UTC);
        let obs = |build: &'static str| Observation {
            role: Role::Host,
            addr: Some("http://127.0.0.1:8081"),
            capabilities: &caps,
            build_id: build,
            capability_hash: "h",
            runtime_json: r#"{"os":"linux"}"#,
            load: Load {
                inflight: 1,
                capacity: 4,
            },
        };
        let (a, _) = NodeRecord::first("a".into(), &obs("b1"), now, &interner);
        let (mut b, _) = NodeRecord::first("b".into(), &obs("b1"), now, &interner);
        let policy = sheratan_store::registry::RegistryPolicy {
            ttl: std::time::Duration::from_secs(120),
            dead_after: std::time::Duration::from_secs(600),
            spoof_threshold: 3,
            spoof_window: std::time::Duration::from_secs(600),
        };
        b.observe(&obs("b2"), now, &policy, &interner);

        let mut table = StringTable::default();
        let rows = vec![Row::capture(&a, &mut table), Row::capture(&b, &mut table)];
        let mut out = Vec::new();
        let mut w = Writer::begin(&mut out, now).unwrap();
        w.rows(&rows).unwrap();
        assert_eq!(w.finish(&table).unwrap(), 2);
        // echo, sleep, addr, b1, h, runtime, b2: each once; one capability list.
        assert_eq!(table.strings.len(), 7, "{:?}", table.strings);
        assert_eq!(table.lists.len(), 1);

        let loaded = decode(&out, &interner).unwrap();
        assert_eq!(loaded.written_at, now);
        let b2 = &loaded.records[1];
        assert_eq!(&*b2.node_id, "b");
        assert_eq!(&*b2.current.build_id, "b2");
        assert_eq!(&*b2.baseline.as_ref().unwrap().build_id, "b1");
        assert_eq!(b2.last_seen, now);
        assert_eq!(b2.load.capacity, 4);
        assert_eq!(b2.addr.as_deref(), Some("http://127.0.0.1:8081"));
        assert!(loaded.records[0].baseline.is_none());
    }

    #[test]
    fn an_index_out_of_range_is_corrupt() {
        let text = r#"{"format":1,"written_at":"2026-11-27T08:00:00Z","nodes":[{"id":"a","role":"worker","addr":null,"caps":0,"fp":[0,0,9],"first_seen":"2026-11-27T08:00:00Z","last_seen":"2026-11-27T08:00:00Z","load":[0,0],"status":"ONLINE"}],"strings":["x"],"lists":[[]]}"#;
        let err = decode(text.as_bytes(), &Interner::default()).err().unwrap();
        assert!(err.contains("out of range"), "{err}");
    }
}
