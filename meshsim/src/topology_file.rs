//! Topology files: the TOML form of a [`Topology`], read by `meshsim up <file>` and written
//! when a mesh is saved. A file may also say how its run is made (the `[run]` table: backend,
//! workload, node command, image) and that a node runs nothing (`workload = "none"` in its
//! `[[nodes]]` table); [`read_file`] returns those beside the topology ([`TopologyFile`]).
//! They are not part of the model, so they are taken out of the tree before serde builds
//! the [`Topology`], and read from it on their own.
//!
//! A file is parsed once into `toml`'s span-keeping tree ([`DeTable`]), and both later steps
//! work from that tree:
//!
//! 1. serde turns it into a [`Topology`]; its errors (unknown key, wrong type, missing key)
//!    carry the byte span of the offending key or value, which we map back to a field path;
//! 2. the model checks the values ([`Topology::validate`]); its errors carry a field path
//!    such as `nodes[2].x`, which we map forward to the span of that key's value.
//!
//! So every error, whichever step finds it, is one line with file, line, column and field:
//!
//! ```text
//! examples/bad.toml:7:5: nodes[1].x: must be a finite number, got NaN
//! ```
//!
//! One line because `meshsim up` prints it as the whole story, and editors and terminals
//! turn `path:line:column` into a link to the spot.

use std::{
    collections::BTreeMap,
    fmt, fs, io,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use crate::{
    model::{ModelError, NodeId, Topology},
    run_config::BackendKind,
    workload::{
        NodeCommand, NodeWorkload, SynapseOptions, WorkloadKind, node_workload,
        restart::Restart,
        synapse::{Database, Launch, workers::Profile},
    },
};

/// A place in a topology file: 1-based line and column, shown as `path:line:column`.
///
/// The column counts characters, not bytes, because that is what editors show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`. Offsets past the end (an error at end of
    /// file) land just after the last character.
    pub(crate) fn of(path: &Path, text: &str, offset: usize) -> Self {
        let before = &text.as_bytes()[..offset.min(text.len())];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |newline| newline + 1);
        Self {
            path: path.to_owned(),
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            column: String::from_utf8_lossy(&before[line_start..])
                .chars()
                .count()
                + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// Why a topology file was refused. Each renders as one line that names the file, and, for
/// everything but [`TopologyFileError::Read`], the line, column and field.
///
/// No variant exposes its cause through `Error::source`: the cause's text is already part
/// of the line, and error reporters that walk the chain would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum TopologyFileError {
    /// The file could not be read: missing, not readable, or not UTF-8.
    #[error(
        "{}: cannot read the topology file: {error} (give the path of a TOML topology \
         file, such as examples/mesh6.toml)",
        path.display()
    )]
    Read { path: PathBuf, error: io::Error },
    /// The text is not TOML. `section` is the table the error is in (`nodes[1]`), if any;
    /// `found` the text the parser stopped at, if it is short and on one line (a duplicate
    /// key, a value that is not one).
    #[error(
        "{at}: {}invalid TOML{}: {message}",
        prefix(section.as_deref()),
        found.as_deref().map(|found| format!(" at `{found}`")).unwrap_or_default()
    )]
    Syntax {
        at: Location,
        section: Option<String>,
        found: Option<String>,
        message: String,
    },
    /// TOML, but not shaped like a topology: an unknown key, a value of the wrong type, or a
    /// missing key. `field` is the key's path (`settings.neighbors`), absent for the top level.
    #[error("{at}: {}{message}", prefix(field.as_deref()))]
    Shape {
        at: Location,
        field: Option<String>,
        message: String,
    },
    /// Well shaped, but a value breaks a rule of the model: a range, a duplicate name, a pin
    /// of an unknown node. The error names the field, as in `nodes[2].x: ...`.
    #[error("{at}: {error}")]
    Invalid { at: Location, error: ModelError },
    /// A value of the run's settings that cannot be: an empty command, a workload and a
    /// command at once, a node's workload that is not the run's.
    #[error("{at}: {field}: {message}")]
    Run {
        at: Location,
        field: String,
        message: String,
    },
}

/// `"field: "`, or nothing for no field.
fn prefix(field: Option<&str>) -> String {
    field.map(|field| format!("{field}: ")).unwrap_or_default()
}

impl TopologyFileError {
    /// Where in the file the error is; `None` if the file could not be read.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { at, .. }
            | Self::Shape { at, .. }
            | Self::Invalid { at, .. }
            | Self::Run { at, .. } => Some(at),
        }
    }

    /// The path of the field the error is about (`nodes[2].x`), or of the table a syntax
    /// error is in.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { section, .. } => section.as_deref(),
            Self::Shape { field, .. } => field.as_deref(),
            Self::Invalid { error, .. } => error.field(),
            Self::Run { field, .. } => Some(field),
        }
    }
}

/// A topology file: the mesh, and what the file says about the run that starts it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyFile {
    pub topology: Topology,
    /// The `[run]` table (each key optional; a flag given on the command line wins).
    pub run: RunTable,
    /// The nodes whose table names a workload, in file order.
    pub node_workloads: Vec<NodeWorkloadEntry>,
    /// The nodes whose table says whether their homeserver is restarted (`restart =
    /// "on-failure" | "never"`).
    pub node_restarts: BTreeMap<NodeId, Restart>,
}

/// The `[run]` table, checked as the flags are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunTable {
    /// `backend = "netns" | "docker"`.
    pub backend: Option<BackendKind>,
    /// `workload = "none" | "synapse"`, or `node_cmd = "CMD"` (a [`WorkloadKind::Command`]);
    /// `None` when the file says neither.
    pub workload: Option<WorkloadKind>,
    /// `image = "IMAGE"`, for the docker backend.
    pub image: Option<String>,
    /// `database = "sqlite" | "postgres"`, for Synapse nodes.
    pub database: Option<Database>,
    /// `profile = "small" | "full"`, for `synapse-workers` nodes.
    pub profile: Option<Profile>,
    /// `launch = "fork" | "cold"`, for Synapse nodes.
    pub launch: Option<Launch>,
    /// `restart = "on-failure" | "never"`, for Synapse nodes: the run's default.
    pub restart: Option<Restart>,
}

/// `workload = "..."` in one node's table, with where it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeWorkloadEntry {
    pub node: NodeId,
    pub name: String,
    /// `nodes[2].workload`.
    pub field: String,
    pub at: Location,
}

impl TopologyFile {
    /// What each node runs in a run whose workload is `run` ([`WorkloadKind::name`]): the
    /// nodes that say `workload = "none"` nothing, the others the run's workload. A node that
    /// names any other workload than `none` or `run` is refused, at its line.
    pub fn node_workloads(
        &self,
        run: &str,
    ) -> Result<BTreeMap<NodeId, NodeWorkload>, TopologyFileError> {
        self.node_workloads
            .iter()
            .map(|entry| {
                node_workload(&entry.name, run)
                    .map(|workload| (entry.node, workload))
                    .map_err(|e| TopologyFileError::Run {
                        at: entry.at.clone(),
                        field: entry.field.clone(),
                        message: e.to_string(),
                    })
            })
            .collect()
    }
}

/// `[run]` as serde reads it; values are checked as the flags are (the enums refuse unknown
/// names with the list of known ones).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunDoc {
    #[serde(default)]
    backend: Option<BackendName>,
    #[serde(default)]
    workload: Option<WorkloadName>,
    #[serde(default)]
    node_cmd: Option<Spanned<String>>,
    #[serde(default)]
    node_cmd_as_root: Option<Spanned<bool>>,
    #[serde(default)]
    image: Option<Spanned<String>>,
    #[serde(default)]
    database: Option<Spanned<Database>>,
    #[serde(default)]
    profile: Option<Spanned<Profile>>,
    #[serde(default)]
    launch: Option<Spanned<Launch>>,
    #[serde(default)]
    restart: Option<Spanned<Restart>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BackendName {
    Netns,
    Docker,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WorkloadName {
    None,
    Synapse,
    #[serde(rename = "synapse-workers")]
    SynapseWorkers,
}

/// A node's workload as serde reads it: only a known name (`command` is what a node of a
/// `node_cmd` run names). Whether it is this run's is checked once the run is known.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum NodeWorkloadName {
    None,
    Command,
    Synapse,
    #[serde(rename = "synapse-workers")]
    SynapseWorkers,
}

impl NodeWorkloadName {
    fn as_str(self) -> &'static str {
        match self {
            NodeWorkloadName::None => "none",
            NodeWorkloadName::Command => "command",
            NodeWorkloadName::Synapse => "synapse",
            NodeWorkloadName::SynapseWorkers => "synapse-workers",
        }
    }
}

/// The parts of a file that are not the model's: `[run]` and each node's `workload`. Other
/// keys are the Topology's to check.
#[derive(Debug, Default, Deserialize)]
struct RunParts {
    #[serde(default)]
    run: RunDoc,
    #[serde(default)]
    nodes: Vec<NodeRunDoc>,
}

#[derive(Debug, Default, Deserialize)]
struct NodeRunDoc {
    #[serde(default)]
    workload: Option<Spanned<NodeWorkloadName>>,
    #[serde(default)]
    restart: Option<Restart>,
}

/// Reads and checks the topology file at `path` (see [`parse`]).
pub fn read(path: &Path) -> Result<Topology, TopologyFileError> {
    read_file(path).map(|file| file.topology)
}

/// Reads and checks the topology file at `path` with its run settings (see [`parse_file`]).
pub fn read_file(path: &Path) -> Result<TopologyFile, TopologyFileError> {
    let text = fs::read_to_string(path).map_err(|error| TopologyFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse_file(path, &text)
}

/// Parses `text` as a topology file and checks it against the model's rules, so that the
/// result loads into a [`crate::model::Model`] without error. `path_for_messages` is only
/// used to name the file in errors. The run settings are checked too, and left out.
pub fn parse(path_for_messages: &Path, text: &str) -> Result<Topology, TopologyFileError> {
    parse_file(path_for_messages, text).map(|file| file.topology)
}

/// [`parse`], keeping the `[run]` table and the nodes' workloads. A `[[step]]` list is
/// refused: it makes the file a scenario, for `meshsim run`.
pub fn parse_file(path_for_messages: &Path, text: &str) -> Result<TopologyFile, TopologyFileError> {
    let (file, steps) = parse_file_with::<StepsPresent>(path_for_messages, text)?;
    if let Some(step) = steps.step {
        return Err(TopologyFileError::Shape {
            at: Location::of(path_for_messages, text, step.span().start),
            field: Some("step".into()),
            message: "steps make this file a scenario: run it with `meshsim run FILE` \
                      (`meshsim up` starts a topology and leaves it to you)"
                .into(),
        });
    }
    Ok(file)
}

/// Whether a file has steps, and where they start.
#[derive(Deserialize)]
struct StepsPresent {
    #[serde(default)]
    step: Option<Spanned<toml::Value>>,
}

/// [`parse_file`] for a file with more than a topology (a scenario's `[[step]]` list): the
/// topology and run settings as [`parse_file`] checks them, and `X` read by serde from the
/// whole file (so `X` should not refuse unknown keys at its top level). `X`'s shape errors
/// are located like the topology's.
pub(crate) fn parse_file_with<X: serde::de::DeserializeOwned>(
    path_for_messages: &Path,
    text: &str,
) -> Result<(TopologyFile, X), TopologyFileError> {
    let at = |offset: usize| Location::of(path_for_messages, text, offset);

    let tree = DeTable::parse(text).map_err(|error| {
        let span = error.span().unwrap_or_default();
        TopologyFileError::Syntax {
            at: at(span.start),
            section: syntax_section(text, span.start),
            found: text
                .get(span)
                .filter(|found| !found.is_empty() && found.len() <= 40 && !found.contains('\n'))
                .map(str::to_owned),
            message: error.message().to_owned(),
        }
    })?;

    let shape_error = |error: toml::de::Error| {
        let offset = error.span().map_or(0, |span| span.start);
        TopologyFileError::Shape {
            at: at(offset),
            field: path_at(tree.get_ref(), "", offset),
            message: error.message().to_owned(),
        }
    };
    let topology = Topology::deserialize(toml::Deserializer::from(without_run_parts(&tree)))
        .map_err(shape_error)?;
    let parts =
        RunParts::deserialize(toml::Deserializer::from(tree.clone())).map_err(shape_error)?;
    let extra = X::deserialize(toml::Deserializer::from(tree.clone())).map_err(shape_error)?;

    topology.validate().map_err(|error| {
        let offset = error
            .field()
            .map_or(0, |field| value_span(&tree, field).start);
        TopologyFileError::Invalid {
            at: at(offset),
            error,
        }
    })?;

    let run = run_table(
        parts.run,
        |span: Range<usize>, field: &str, message: String| TopologyFileError::Run {
            at: at(span.start),
            field: format!("run.{field}"),
            message,
        },
    )?;
    // `validate` passed: the id, the name, or both (agreeing) say which node it is.
    let id_of = |doc: &crate::model::NodeDoc| {
        doc.id
            .or_else(|| doc.name.as_deref()?.parse().ok())
            .expect("a validated node has an id")
    };
    let node_restarts = topology
        .nodes
        .iter()
        .zip(&parts.nodes)
        .filter_map(|(doc, run_doc)| Some((id_of(doc), run_doc.restart?)))
        .collect();
    let node_workloads = topology
        .nodes
        .iter()
        .zip(&parts.nodes)
        .enumerate()
        .filter_map(|(i, (doc, run_doc))| {
            let name = run_doc.workload.as_ref()?;
            let node = id_of(doc);
            Some(NodeWorkloadEntry {
                node,
                name: name.get_ref().as_str().to_owned(),
                field: format!("nodes[{i}].workload"),
                at: at(name.span().start),
            })
        })
        .collect();
    Ok((
        TopologyFile {
            topology,
            run,
            node_workloads,
            node_restarts,
        },
        extra,
    ))
}

/// The tree without what the model does not know: the `[run]` table and each node's
/// `workload`, so that the model's own types can keep refusing unknown keys.
fn without_run_parts<'i>(tree: &Spanned<DeTable<'i>>) -> Spanned<DeTable<'i>> {
    let mut tree = tree.clone();
    let table = tree.get_mut();
    table.remove("run");
    table.remove("step");
    if let Some(nodes) = table.get_mut("nodes")
        && let DeValue::Array(items) = nodes.get_mut()
    {
        for item in items.iter_mut() {
            if let DeValue::Table(node) = item.get_mut() {
                node.remove("workload");
                node.remove("restart");
            }
        }
    }
    tree
}

/// Checks `[run]` as the flags are checked; `refuse(span, field, message)` makes the error.
fn run_table(
    doc: RunDoc,
    refuse: impl Fn(Range<usize>, &str, String) -> TopologyFileError,
) -> Result<RunTable, TopologyFileError> {
    let not_empty = |value: Option<Spanned<String>>, field: &str| {
        value
            .map(|v| {
                if v.get_ref().trim().is_empty() {
                    Err(refuse(v.span(), field, "must not be empty".to_owned()))
                } else {
                    Ok(v)
                }
            })
            .transpose()
    };
    let node_cmd = not_empty(doc.node_cmd, "node_cmd")?;
    let image = not_empty(doc.image, "image")?;
    let workload = match (doc.workload, node_cmd) {
        (Some(name @ (WorkloadName::Synapse | WorkloadName::SynapseWorkers)), Some(cmd)) => {
            let named = if name == WorkloadName::Synapse {
                "synapse"
            } else {
                "synapse-workers"
            };
            return Err(refuse(
                cmd.span(),
                "node_cmd",
                format!(
                    "`workload = \"{named}\"` and `node_cmd` were both given: choose one \
                     (`node_cmd` runs your command instead of a workload)"
                ),
            ));
        }
        // As with the flags, `workload = "none"` next to a command is just the command.
        (_, Some(cmd)) => Some(WorkloadKind::Command(NodeCommand {
            template: cmd.into_inner(),
            as_root: doc.node_cmd_as_root.as_ref().is_some_and(|r| *r.get_ref()),
        })),
        (Some(WorkloadName::Synapse), None) => {
            Some(WorkloadKind::Synapse(SynapseOptions::default()))
        }
        (Some(WorkloadName::SynapseWorkers), None) => Some(WorkloadKind::Synapse(
            SynapseOptions::with_workers(Profile::default()),
        )),
        (Some(WorkloadName::None), None) => Some(WorkloadKind::None),
        (None, None) => None,
    };
    if let Some(as_root) = &doc.node_cmd_as_root
        && !matches!(workload, Some(WorkloadKind::Command(_)))
    {
        return Err(refuse(
            as_root.span(),
            "node_cmd_as_root",
            "`node_cmd_as_root` says how the node command runs: it needs `node_cmd`".to_owned(),
        ));
    }
    let workers = matches!(&workload, Some(WorkloadKind::Synapse(o)) if o.workers.is_some());
    if let Some(db) = &doc.database
        && *db.get_ref() == Database::Sqlite
        && workers
    {
        return Err(refuse(
            db.span(),
            "database",
            "workers share one database, so `synapse-workers` needs `database = \"postgres\"` \
             (the default for it)"
                .to_owned(),
        ));
    }
    if let Some(profile) = &doc.profile
        && workload.is_some()
        && !workers
    {
        return Err(refuse(
            profile.span(),
            "profile",
            "a profile chooses workers: it needs `workload = \"synapse-workers\"`".to_owned(),
        ));
    }
    if let Some(launch) = &doc.launch
        && matches!(
            workload,
            Some(WorkloadKind::None | WorkloadKind::Command(_))
        )
    {
        return Err(refuse(
            launch.span(),
            "launch",
            "`launch` says how homeservers start: add `workload = \"synapse\"`".to_owned(),
        ));
    }
    if let Some(restart) = &doc.restart
        && matches!(
            workload,
            Some(WorkloadKind::None | WorkloadKind::Command(_))
        )
    {
        return Err(refuse(
            restart.span(),
            "restart",
            "`restart` says whether homeservers start again: add `workload = \"synapse\"`"
                .to_owned(),
        ));
    }
    // Postgres is for homeservers: with another workload named here it would do nothing.
    if let Some(db) = &doc.database
        && *db.get_ref() == Database::Postgres
        && matches!(
            workload,
            Some(WorkloadKind::None | WorkloadKind::Command(_))
        )
    {
        return Err(refuse(
            db.span(),
            "database",
            "`database = \"postgres\"` is for homeservers: add `workload = \"synapse\"`".to_owned(),
        ));
    }
    Ok(RunTable {
        backend: doc.backend.map(|b| match b {
            BackendName::Netns => BackendKind::Netns,
            BackendName::Docker => BackendKind::Docker,
        }),
        workload,
        image: image.map(Spanned::into_inner),
        database: doc.database.map(Spanned::into_inner),
        profile: doc.profile.map(Spanned::into_inner),
        launch: doc.launch.map(Spanned::into_inner),
        restart: doc.restart.map(Spanned::into_inner),
    })
}

/// The topology as a TOML file that [`parse`] reads back to an equal [`Topology`].
pub fn to_toml(topology: &Topology) -> String {
    // The serializer only fails on what TOML cannot hold (a map with non-string keys, a
    // unit value, a bare value at the top); a Topology is tables, arrays, strings and numbers.
    toml::to_string(topology).expect("a Topology is always representable in TOML")
}

/// The field path of the innermost key or value of `table` whose span covers `offset`, with
/// `prefix` as the table's own path. Serde's errors point at the key for an unknown key, at
/// the value for a wrong type, and at the table (its `[header]`) for a missing key, so the
/// path names exactly what the message is about.
///
/// Tables declared with a `[header]` span only their header, not the keys below it, so every
/// table is searched, not only those covering `offset`.
fn path_at(table: &DeTable<'_>, prefix: &str, offset: usize) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let path = join(prefix, key.get_ref());
        if covers(&key.span(), offset) {
            return Some(path);
        }
        path_in_value(value, path, offset)
    })
}

/// [`path_at`] for one value whose own path is `path`.
fn path_in_value(value: &Spanned<DeValue<'_>>, path: String, offset: usize) -> Option<String> {
    let inner = match value.get_ref() {
        DeValue::Table(table) => path_at(table, &path, offset),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| path_in_value(item, format!("{path}[{i}]"), offset)),
        _ => None,
    };
    inner.or_else(|| covers(&value.span(), offset).then_some(path))
}

/// Whether an error at `offset` is about the thing spanning `span`. An empty span (an error
/// at a point, as the parser reports some) covers its own position.
fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The span of the value at a model field path such as `nodes[2].x` or `settings.loss_pct`:
/// where the bad value is written. A path that leads to no value (a key the file left out,
/// as in `nodes[0].id` for a node with neither id nor name) gives the deepest part that is
/// there, usually the `[[nodes]]` header of that node.
fn value_span(tree: &Spanned<DeTable<'_>>, field: &str) -> Range<usize> {
    let mut span = tree.span();
    let mut table = tree.get_ref();
    for segment in field.split('.') {
        let (key, indices) = segment.split_once('[').unwrap_or((segment, ""));
        let Some(mut value) = table.get(key) else {
            return span;
        };
        span = value.span();
        for index in indices.split('[').filter(|index| !index.is_empty()) {
            let item = index
                .trim_end_matches(']')
                .parse::<usize>()
                .ok()
                .and_then(|i| match value.get_ref() {
                    DeValue::Array(items) => items.get(i),
                    _ => None,
                });
            let Some(item) = item else {
                return span;
            };
            value = item;
            span = value.span();
        }
        match value.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => return span,
        }
    }
    span
}

/// The table a syntax error at `offset` is in: the last `[header]` or `[[header]]` above the
/// error's line, found by parsing only the lines above it. Those lines are read strictly, not
/// with the parser's error recovery, whose guesses around a broken line can name a table that
/// is not in the file; if they do not parse on their own (the error is inside a multi-line
/// value), or the error is on a header line itself, no table is named rather than a wrong one.
fn syntax_section(text: &str, offset: usize) -> Option<String> {
    let line_start = text.as_bytes()[..offset.min(text.len())]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    if text[line_start..].trim_start().starts_with('[') {
        return None;
    }
    let above = DeTable::parse(&text[..line_start]).ok()?;
    let mut headers = Vec::new();
    collect_headers(&text[..line_start], above.get_ref(), "", &mut headers);
    // The last of equal starts is the deepest: `[a.b]` is also where implicit `a` begins.
    headers
        .into_iter()
        .max_by_key(|(start, _)| *start)
        .map(|(_, path)| path)
}

/// Every table of `table` declared by a header, with the header's start. A header table's
/// span is the header itself, which starts with `[`; an inline table's starts with `{`.
/// Parents come before their children.
fn collect_headers(text: &str, table: &DeTable<'_>, prefix: &str, out: &mut Vec<(usize, String)>) {
    for (key, value) in table {
        collect_value_headers(text, value, join(prefix, key.get_ref()), out);
    }
}

fn collect_value_headers(
    text: &str,
    value: &Spanned<DeValue<'_>>,
    path: String,
    out: &mut Vec<(usize, String)>,
) {
    match value.get_ref() {
        DeValue::Table(table) => {
            let span = value.span();
            if text.get(span.clone()).is_some_and(|s| s.starts_with('[')) {
                out.push((span.start, path.clone()));
            }
            collect_headers(text, table, &path, out);
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_value_headers(text, item, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Model, NodeId, PinDoc, Settings};

    const BAD: &str = "bad.toml";

    fn error(text: &str) -> TopologyFileError {
        match parse(Path::new(BAD), text) {
            Ok(topology) => panic!("accepted {topology:?}"),
            Err(error) => error,
        }
    }

    /// Asserts that `text` is refused with one line that starts with
    /// `bad.toml:<line>:<column>: <field>: ` and mentions `says`.
    fn assert_refused(text: &str, line: usize, column: usize, field: &str, says: &str) {
        let error = error(text);
        let message = error.to_string();
        assert!(!message.contains('\n'), "not one line: {message}");
        assert!(
            message.starts_with(&format!("{BAD}:{line}:{column}: {field}: ")),
            "expected {BAD}:{line}:{column}: {field}: ..., got {message}"
        );
        assert!(message.contains(says), "{message:?} does not say {says:?}");
        let at = error.location().expect("a location");
        assert_eq!((at.line, at.column), (line, column), "{message}");
        assert_eq!(error.field(), Some(field), "{message}");
    }

    const TWO_NODES: &str = "\
[settings]
neighbours = 3

[[nodes]]
name = \"n1\"
x = 10
y = 20

[[nodes]]
name = \"n2\"
x = 30
y = 40
";

    #[test]
    fn a_valid_file_parses() {
        let topology = parse(Path::new(BAD), TWO_NODES).unwrap();
        assert_eq!(topology.settings.neighbours, 3);
        assert_eq!(topology.nodes.len(), 2);
        assert_eq!(topology.nodes[1].name.as_deref(), Some("n2"));
        assert_eq!((topology.nodes[1].x, topology.nodes[1].y), (30.0, 40.0));
    }

    #[test]
    fn syntax_errors_name_the_table_they_are_in() {
        let text = TWO_NODES.replace("y = 40", "y = 40 40");
        assert_refused(
            &text,
            12,
            5,
            "nodes[1]",
            "invalid TOML at `40 40`: string values must be quoted",
        );
        let text = TWO_NODES.replace("x = 10", "x = ");
        assert_refused(&text, 6, 5, "nodes[0]", "invalid TOML");
        let text = TWO_NODES.replace("neighbours = 3", "neighbours = 3 4");
        assert_refused(&text, 2, 14, "settings", "invalid TOML");
    }

    #[test]
    fn syntax_errors_at_the_top_level_or_in_a_header_name_no_table() {
        let message = error("[settings\nneighbours = 3\n").to_string();
        assert_eq!(
            message,
            "bad.toml:1:10: invalid TOML: unclosed table, expected `]`"
        );
        let text = TWO_NODES.replace("[[nodes]]\nname = \"n2\"", "[[nodes]\nname = \"n2\"");
        let error = error(&text);
        assert_eq!(error.location().map(|at| at.line), Some(9), "{error}");
        assert_eq!(error.field(), None, "{error}");
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        let text = TWO_NODES.replace("y = 20", "y = 20\nx = 11");
        let message = error(&text).to_string();
        assert_eq!(
            message,
            "bad.toml:8:1: nodes[0]: invalid TOML at `x`: duplicate key"
        );
    }

    #[test]
    fn unknown_fields_are_named_with_what_is_expected() {
        let text = TWO_NODES.replace("neighbours", "neighbors");
        assert_refused(
            &text,
            2,
            1,
            "settings.neighbors",
            "unknown field `neighbors`, expected one of `neighbours`",
        );
        let text = format!("nodez = 1\n{TWO_NODES}");
        assert_refused(&text, 1, 1, "nodez", "unknown field `nodez`");
        let text = TWO_NODES.replace("x = 30", "x = 30\nz = 1");
        assert_refused(&text, 12, 1, "nodes[1].z", "unknown field `z`");
    }

    #[test]
    fn wrong_types_point_at_the_value() {
        let text = TWO_NODES.replace("x = 30", "x = \"thirty\"");
        assert_refused(
            &text,
            11,
            5,
            "nodes[1].x",
            "invalid type: string \"thirty\"",
        );
        let text = TWO_NODES.replace("neighbours = 3", "neighbours = -3");
        assert_refused(&text, 2, 14, "settings.neighbours", "integer `-3`");
        let text = TWO_NODES.replace("neighbours = 3", "cost = \"fastest\"");
        assert_refused(
            &text,
            2,
            8,
            "settings.cost",
            "unknown variant `fastest`, expected",
        );
        let text = format!("pins = 3\n{TWO_NODES}");
        assert_refused(
            &text,
            1,
            8,
            "pins",
            "invalid type: integer `3`, expected a sequence",
        );
    }

    #[test]
    fn missing_fields_point_at_their_table() {
        let text = TWO_NODES.replace("y = 40\n", "");
        assert_refused(&text, 9, 1, "nodes[1]", "missing field `y`");
    }

    #[test]
    fn negative_latencies_are_refused_in_settings_and_pins() {
        let text = TWO_NODES.replace("neighbours = 3", "neighbours = 3\nmax_latency_ms = -5");
        assert_refused(
            &text,
            3,
            18,
            "settings.max_latency_ms",
            "must be within 0..=3600000, got -5",
        );
        let text = format!("{TWO_NODES}\n[[pins]]\na = \"n1\"\nb = \"n2\"\nlatency_ms = -1.5\n");
        assert_refused(&text, 17, 14, "pins[0].latency_ms", "got -1.5");
    }

    #[test]
    fn nan_and_infinity_are_refused() {
        let text = TWO_NODES.replace("y = 20", "y = nan");
        let message = error(&text).to_string();
        assert_eq!(
            message,
            "bad.toml:7:5: nodes[0].y: must be a finite number, got NaN"
        );
        let text = TWO_NODES.replace("neighbours = 3", "jitter_ms = -inf");
        assert_refused(&text, 2, 13, "settings.jitter_ms", "finite");
        let text = format!("{TWO_NODES}\n[[pins]]\na = \"n1\"\nb = \"n2\"\nloss_pct = +inf\n");
        assert_refused(&text, 17, 12, "pins[0].loss_pct", "finite");
    }

    #[test]
    fn duplicate_node_names_point_at_the_second() {
        let text = TWO_NODES.replace("name = \"n2\"", "name = \"n1\"");
        assert_refused(
            &text,
            10,
            8,
            "nodes[1].name",
            "duplicate name n1 (also nodes[0])",
        );
    }

    #[test]
    fn positions_out_of_range_are_refused() {
        let text = TWO_NODES.replace("x = 30", "x = 1e6");
        assert_refused(
            &text,
            11,
            5,
            "nodes[1].x",
            "must be within -100000..=100000",
        );
    }

    #[test]
    fn nodes_without_identity_point_at_their_header() {
        let text = TWO_NODES.replace("name = \"n2\"\n", "");
        assert_refused(&text, 9, 1, "nodes[1].id", "needs an id or a name");
    }

    #[test]
    fn a_next_id_among_the_nodes_is_refused() {
        let text = format!("next_id = 2\n{TWO_NODES}");
        assert_refused(&text, 1, 11, "next_id", "not above every node");
        let text = format!("next_id = 7\n{TWO_NODES}");
        assert_eq!(
            parse(Path::new(BAD), &text).unwrap().next_id,
            Some(NodeId(7))
        );
    }

    #[test]
    fn cuts_of_unknown_nodes_are_refused() {
        let text = format!("partitions = [[\"n1\", \"n9\"]]\n{TWO_NODES}");
        assert_refused(&text, 1, 22, "partitions[0][1]", "unknown node n9");
        let text = format!("down = [[\"n2\", \"n2\"]]\n{TWO_NODES}");
        assert_refused(&text, 1, 16, "down[0][1]", "same node");
    }

    #[test]
    fn pins_of_unknown_nodes_are_refused() {
        let text = format!("{TWO_NODES}\n[[pins]]\na = \"n1\"\nb = \"n9\"\njitter_ms = 1\n");
        assert_refused(&text, 16, 5, "pins[0].b", "unknown node n9");
    }

    #[test]
    fn client_links_are_read_and_bad_ones_located() {
        let text = format!(
            "{TWO_NODES}\n[client]\nlatency_ms = 100\n\n[[clients]]\nnode = \"n2\"\nbandwidth_down_bps = 64000\nbandwidth_up_bps = 32000\n"
        );
        let topology = parse(Path::new(BAD), &text).unwrap();
        let links = topology.client_links();
        assert_eq!(links.default.latency_ms, 100.0);
        let n2 = links.nodes[&NodeId(2)];
        assert_eq!(
            (n2.bandwidth_up_bps, n2.bandwidth_down_bps),
            (32_000, 64_000)
        );
        assert_eq!(links.of(NodeId(1)).latency_ms, 100.0);

        let text = format!("{TWO_NODES}\n[client]\nloss_pct = 120\n");
        assert_refused(&text, 15, 12, "client.loss_pct", "got 120");
        let text = format!("{TWO_NODES}\n[[clients]]\nnode = \"n9\"\n");
        assert_refused(&text, 15, 8, "clients[0].node", "unknown node n9");
    }

    #[test]
    fn inline_tables_are_located_too() {
        let text = "nodes = [{ name = \"n1\", x = 1, y = 2 }, { name = \"n2\", x = 1 }]\n";
        assert_refused(text, 1, 41, "nodes[1]", "missing field `y`");
        let text = "nodes = [{ name = \"n1\", x = 1, y = nan }]\n";
        assert_refused(text, 1, 36, "nodes[0].y", "finite");
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = TWO_NODES.replace("neighbours = 3", "neighbours = 3 # ünïcödé\nloss_pct = 101");
        assert_refused(&text, 3, 12, "settings.loss_pct", "0..=100");
        let text = "# ünïcödé\n[settings]\n\"é\" = 1\n";
        assert_refused(text, 3, 1, "settings.é", "unknown field");
    }

    #[test]
    fn missing_files_name_the_path() {
        let path = Path::new("/nonexistent/meshsim/topo.toml");
        let error = read(path).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("/nonexistent/meshsim/topo.toml: cannot read the topology file: "),
            "{message}"
        );
        assert!(matches!(
            &error,
            TopologyFileError::Read { error, .. } if error.kind() == io::ErrorKind::NotFound
        ));
        assert!(!message.contains('\n'));
        assert_eq!(error.location(), None);
    }

    #[test]
    fn an_empty_file_is_an_empty_mesh() {
        assert_eq!(parse(Path::new(BAD), "").unwrap(), Topology::default());
    }

    #[test]
    fn to_toml_round_trips() {
        let mut topology = Model::from_topology(&parse(Path::new(BAD), MESH6).unwrap())
            .unwrap()
            .topology();
        topology.settings = Settings {
            neighbours: 7,
            max_latency_ms: 123.25,
            jitter_ms: 0.1 + 0.2,
            bandwidth_bps: crate::model::MAX_BANDWIDTH_BPS,
            ..Settings::default()
        };
        topology.nodes[0].x = -0.3;
        topology.nodes[1].y = 99_999.999_999;
        topology.nodes[2].name = None;
        topology.nodes[3].id = None;
        topology.pins.push(PinDoc {
            a: "n6".into(),
            b: "n1".into(),
            latency_ms: None,
            jitter_ms: Some(1.5),
            bandwidth_bps: Some(0),
            loss_pct: Some(0.001),
        });
        topology.partitions = vec![vec!["n2".into(), "n3".into()], vec!["n6".into()]];
        topology.down = vec![["n1".into(), "n4".into()]];
        topology.next_id = Some(NodeId(9));
        let text = to_toml(&topology);
        assert_eq!(parse(Path::new(BAD), &text).unwrap(), topology, "{text}");
    }

    /// TWO_NODES with a `[run]` table in front and n2 a bare router.
    fn with_run(run: &str) -> String {
        format!(
            "[run]\n{run}\n{}",
            TWO_NODES.replace("y = 40", "y = 40\nworkload = \"none\"")
        )
    }

    #[test]
    fn the_run_table_and_node_workloads_are_read() {
        let text = with_run(
            "backend = \"docker\"\nworkload = \"synapse\"\nimage = \"meshsim/synapse:test\"\n",
        );
        let file = parse_file(Path::new(BAD), &text).unwrap();
        assert_eq!(file.run.backend, Some(BackendKind::Docker));
        assert!(
            matches!(file.run.workload, Some(WorkloadKind::Synapse(_))),
            "{:?}",
            file.run.workload
        );
        assert_eq!(file.run.image.as_deref(), Some("meshsim/synapse:test"));
        assert_eq!(file.topology.nodes.len(), 2);
        let entry = &file.node_workloads[0];
        assert_eq!(
            (entry.node, entry.name.as_str(), entry.field.as_str()),
            (NodeId(2), "none", "nodes[1].workload")
        );
        assert_eq!((entry.at.line, entry.at.column), (18, 12));
        assert_eq!(
            file.node_workloads("synapse").unwrap(),
            BTreeMap::from([(NodeId(2), NodeWorkload::None)])
        );
        // `parse` gives the same mesh, without the run's parts.
        assert_eq!(parse(Path::new(BAD), &text).unwrap(), file.topology);
    }

    #[test]
    fn a_file_without_run_settings_leaves_them_to_the_flags() {
        let file = parse_file(Path::new(BAD), TWO_NODES).unwrap();
        assert_eq!(file.run, RunTable::default());
        assert!(file.node_workloads.is_empty());
        assert!(file.node_workloads("none").unwrap().is_empty());
    }

    #[test]
    fn a_node_command_is_the_runs_workload() {
        let file = parse_file(Path::new(BAD), &with_run("node_cmd = \"sleep 1000\"\n")).unwrap();
        assert_eq!(
            file.run.workload,
            Some(WorkloadKind::Command("sleep 1000".into()))
        );
        // As with the flags: `workload = "none"` beside a command is the command.
        let text = with_run("workload = \"none\"\nnode_cmd = \"sleep 1\"\n");
        let file = parse_file(Path::new(BAD), &text).unwrap();
        assert_eq!(
            file.run.workload,
            Some(WorkloadKind::Command("sleep 1".into()))
        );
        let file = parse_file(Path::new(BAD), &with_run("workload = \"none\"\n")).unwrap();
        assert_eq!(file.run.workload, Some(WorkloadKind::None));
    }

    #[test]
    fn a_node_command_runs_as_root_only_when_asked() {
        let text = with_run("node_cmd = \"ip route\"\nnode_cmd_as_root = true\n");
        let file = parse_file(Path::new(BAD), &text).unwrap();
        assert_eq!(
            file.run.workload,
            Some(WorkloadKind::Command(NodeCommand {
                template: "ip route".into(),
                as_root: true
            }))
        );
        let text = with_run("node_cmd = \"ip route\"\nnode_cmd_as_root = false\n");
        let file = parse_file(Path::new(BAD), &text).unwrap();
        assert_eq!(
            file.run.workload,
            Some(WorkloadKind::Command("ip route".into()))
        );
        let text = with_run("workload = \"synapse\"\nnode_cmd_as_root = true\n");
        assert_refused(&text, 3, 20, "run.node_cmd_as_root", "it needs `node_cmd`");
    }

    #[test]
    fn bad_run_values_point_at_the_value() {
        let text = with_run("workload = \"dendrite\"\n");
        assert_refused(
            &text,
            2,
            12,
            "run.workload",
            "unknown variant `dendrite`, expected one of `none`, `synapse`, `synapse-workers`",
        );
        let text = with_run("backend = \"vm\"\n");
        assert_refused(
            &text,
            2,
            11,
            "run.backend",
            "unknown variant `vm`, expected `netns` or `docker`",
        );
        let text = with_run("workloads = \"none\"\n");
        assert_refused(&text, 2, 1, "run.workloads", "unknown field `workloads`");
        let text = with_run("workload = \"synapse\"\nnode_cmd = \"sleep 1\"\n");
        assert_refused(&text, 3, 12, "run.node_cmd", "choose one");
        let text = with_run("image = \" \"\n");
        assert_refused(&text, 2, 9, "run.image", "must not be empty");
        let text = with_run("node_cmd = 3\n");
        assert_refused(&text, 2, 12, "run.node_cmd", "invalid type: integer `3`");
        let text = format!("run = 3\n{TWO_NODES}");
        assert_refused(&text, 1, 7, "run", "invalid type: integer `3`");
        let text = with_run("workload = \"synapse\"\ndatabase = \"mysql\"\n");
        assert_refused(
            &text,
            3,
            12,
            "run.database",
            "unknown variant `mysql`, expected `sqlite` or `postgres`",
        );
        let text = with_run("node_cmd = \"sleep 1\"\ndatabase = \"postgres\"\n");
        assert_refused(&text, 3, 12, "run.database", "is for homeservers");
        let text = with_run("workload = \"synapse-workers\"\ndatabase = \"sqlite\"\n");
        assert_refused(&text, 3, 12, "run.database", "workers share one database");
        let text = with_run("workload = \"synapse\"\nprofile = \"full\"\n");
        assert_refused(
            &text,
            3,
            11,
            "run.profile",
            "needs `workload = \"synapse-workers\"`",
        );
        let text = with_run("workload = \"synapse-workers\"\nprofile = \"huge\"\n");
        assert_refused(
            &text,
            3,
            11,
            "run.profile",
            "unknown variant `huge`, expected `small` or `full`",
        );
        let text = with_run("workload = \"synapse\"\nlaunch = \"warm\"\n");
        assert_refused(
            &text,
            3,
            10,
            "run.launch",
            "unknown variant `warm`, expected `fork` or `cold`",
        );
        let text = with_run("node_cmd = \"sleep 1\"\nlaunch = \"cold\"\n");
        assert_refused(&text, 3, 10, "run.launch", "says how homeservers start");
    }

    #[test]
    fn restarts_are_read_for_the_run_and_for_nodes() {
        let text = with_run("workload = \"synapse\"\nrestart = \"never\"\n")
            .replace("workload = \"none\"", "restart = \"on-failure\"");
        let file = parse_file(Path::new(BAD), &text).unwrap();
        assert_eq!(file.run.restart, Some(Restart::Never));
        assert_eq!(
            file.node_restarts,
            BTreeMap::from([(NodeId(2), Restart::OnFailure)])
        );
        let text = with_run("node_cmd = \"sleep 1\"\nrestart = \"never\"\n");
        assert_refused(
            &text,
            3,
            11,
            "run.restart",
            "whether homeservers start again",
        );
        let text = with_run("workload = \"synapse\"\nrestart = \"always\"\n");
        let err = parse_file(Path::new(BAD), &text).unwrap_err().to_string();
        assert!(err.contains("on-failure") && err.contains("never"), "{err}");
    }

    #[test]
    fn the_launch_is_read_for_homeservers() {
        let text = with_run("workload = \"synapse\"\nlaunch = \"cold\"\n");
        let file = parse_file(Path::new(BAD), &text).unwrap();
        assert_eq!(file.run.launch, Some(Launch::Cold));
        let file = parse_file(Path::new(BAD), &with_run("workload = \"synapse\"\n")).unwrap();
        assert_eq!(file.run.launch, None, "the run's default (fork) holds");
    }

    #[test]
    fn homeservers_with_workers_are_on_postgres_by_a_profile() {
        let text = with_run("workload = \"synapse-workers\"\nprofile = \"full\"\n");
        let file = parse_file(Path::new(BAD), &text).unwrap();
        let Some(WorkloadKind::Synapse(options)) = &file.run.workload else {
            panic!("{:?}", file.run.workload)
        };
        assert_eq!(
            options.workers,
            Some(Profile::Small),
            "the default, until the run applies `profile`"
        );
        assert_eq!(options.database, Database::Postgres);
        assert_eq!(file.run.profile, Some(Profile::Full));
        assert_eq!(
            file.run.workload.as_ref().unwrap().name(),
            "synapse-workers"
        );
        assert_eq!(
            file.node_workloads("synapse-workers").unwrap(),
            BTreeMap::from([(NodeId(2), NodeWorkload::None)])
        );
    }

    #[test]
    fn the_database_is_read_for_homeservers() {
        let text = with_run("workload = \"synapse\"\ndatabase = \"postgres\"\n");
        let file = parse_file(Path::new(BAD), &text).unwrap();
        assert_eq!(file.run.database, Some(Database::Postgres));
        // Without a workload here, the flags may still name synapse: checked at the start.
        let file = parse_file(Path::new(BAD), &with_run("database = \"postgres\"\n")).unwrap();
        assert_eq!(file.run.database, Some(Database::Postgres));
        let file = parse_file(Path::new(BAD), &with_run("database = \"sqlite\"\n")).unwrap();
        assert_eq!(file.run.database, Some(Database::Sqlite));
    }

    #[test]
    fn a_node_names_none_or_the_runs_workload() {
        let text = TWO_NODES.replace("y = 40", "y = 40\nworkload = \"dendrite\"");
        assert_refused(
            &text,
            13,
            12,
            "nodes[1].workload",
            "unknown variant `dendrite`, expected one of `none`, `command`, `synapse`",
        );
        // A known name that is not this run's workload: refused once the run is known.
        let text = TWO_NODES.replace("y = 40", "y = 40\nworkload = \"synapse\"");
        let file = parse_file(Path::new(BAD), &text).unwrap();
        assert_eq!(
            file.node_workloads("synapse").unwrap(),
            BTreeMap::from([(NodeId(2), NodeWorkload::Run)])
        );
        let error = file.node_workloads("command").unwrap_err();
        assert_eq!(
            error.to_string(),
            "bad.toml:13:12: nodes[1].workload: unknown workload \"synapse\" for a node: this \
             run's workload is command, so a node runs \"command\" or \"none\""
        );
        assert_eq!(error.field(), Some("nodes[1].workload"));
        // Nodes named by id alone work too.
        let text = "[[nodes]]\nid = 4\nx = 1\ny = 2\nworkload = \"none\"\n";
        let file = parse_file(Path::new(BAD), text).unwrap();
        assert_eq!(
            file.node_workloads("command").unwrap(),
            BTreeMap::from([(NodeId(4), NodeWorkload::None)])
        );
    }

    #[test]
    fn the_routers_example_parses() {
        let text = include_str!("../../examples/routers.toml");
        let file = parse_file(Path::new("examples/routers.toml"), text).unwrap();
        assert!(matches!(file.run.workload, Some(WorkloadKind::Synapse(_))));
        let workloads = file.node_workloads("synapse").unwrap();
        assert_eq!(
            workloads,
            BTreeMap::from([
                (NodeId(2), NodeWorkload::None),
                (NodeId(4), NodeWorkload::None)
            ])
        );
    }

    const MESH6: &str = include_str!("../../examples/mesh6.toml");

    fn mesh6() -> Model {
        let topology = parse(Path::new("examples/mesh6.toml"), MESH6).unwrap();
        Model::from_topology(&topology).unwrap()
    }

    fn id(model: &Model, name: &str) -> NodeId {
        let id: NodeId = name.parse().unwrap();
        assert!(model.node(id).is_some(), "no node {name}");
        id
    }

    /// The node names from `from` to `to` along next hops; empty if `to` is unreachable.
    fn hops_between(model: &Model, from: &str, to: &str) -> Vec<String> {
        let (mut at, to) = (id(model, from), id(model, to));
        let mut names = vec![at.name()];
        while at != to {
            let Some(next) = model.next_hop(at, to) else {
                return Vec::new();
            };
            names.push(next.name());
            assert!(names.len() <= model.nodes().len(), "loop: {names:?}");
            at = next;
        }
        names
    }

    #[test]
    fn mesh6_goes_from_n1_to_n6_in_three_hops() {
        let model = mesh6();
        let (n1, n6) = (id(&model, "n1"), id(&model, "n6"));
        assert!(model.link(n1, n6).is_none(), "n1 and n6 are linked");
        let route = hops_between(&model, "n1", "n6");
        assert_eq!(route, ["n1", "n2", "n3", "n6"], "path n1 -> n6: {route:?}");
        let back = hops_between(&model, "n6", "n1");
        assert_eq!(back, ["n6", "n3", "n2", "n1"], "path n6 -> n1: {back:?}");
    }

    #[test]
    fn mesh6_has_the_links_its_comments_describe() {
        let model = mesh6();
        let links: Vec<(String, String, f64)> = model
            .links()
            .map(|link| {
                let tenth = (link.params.latency_ms * 10.0).round() / 10.0;
                (link.pair.a().name(), link.pair.b().name(), tenth)
            })
            .collect();
        let expected = [
            ("n1", "n2", 20.0),
            ("n1", "n4", 23.3),
            ("n2", "n3", 20.0),
            ("n2", "n4", 12.0),
            ("n3", "n4", 23.3),
            ("n3", "n5", 25.0),
            ("n3", "n6", 20.0),
            ("n4", "n5", 28.3),
            ("n5", "n6", 20.0),
        ]
        .map(|(a, b, ms)| (a.to_owned(), b.to_owned(), ms));
        assert_eq!(links, expected);
        let pinned = model.link(id(&model, "n3"), id(&model, "n5")).unwrap();
        assert_eq!(pinned.params.bandwidth_bps, 10_000_000);
    }

    #[test]
    fn mesh6_moving_n3_up_moves_the_path_to_the_lower_row() {
        let mut model = mesh6();
        let n3 = id(&model, "n3");
        model.move_node(n3, 500.0, 100.0).unwrap();
        let route = hops_between(&model, "n1", "n6");
        assert_eq!(route, ["n1", "n4", "n5", "n6"], "path n1 -> n6: {route:?}");
        for (other, linked) in [("n2", true), ("n6", true), ("n4", false), ("n5", false)] {
            let link = model.link(n3, id(&model, other));
            assert_eq!(link.is_some(), linked, "n3-{other}: {link:?}");
            if let Some(link) = link {
                assert!((link.params.latency_ms - 28.28).abs() < 0.01, "{link:?}");
            }
        }
        let route = hops_between(&model, "n2", "n6");
        assert_eq!(route, ["n2", "n3", "n6"], "path n2 -> n6: {route:?}");
    }

    #[test]
    fn mesh6_removing_a_middle_node_reroutes() {
        for (removed, expected) in [
            ("n2", ["n1", "n4", "n3", "n6"]),
            ("n3", ["n1", "n4", "n5", "n6"]),
        ] {
            let mut model = mesh6();
            model.remove_node(id(&model, removed)).unwrap();
            let route = hops_between(&model, "n1", "n6");
            assert_eq!(
                route, expected,
                "without {removed}, path n1 -> n6: {route:?}"
            );
        }
    }
}
