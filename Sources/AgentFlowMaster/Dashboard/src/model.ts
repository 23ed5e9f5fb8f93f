// The dashboard's model of the cluster, and how /api/ws messages change it.
// No I/O here: feed.ts owns the socket, App.tsx draws what this holds.

export interface PeerStatus {
  node_id: string; name: string; state: "connected" | "connecting" | "backoff" | "idle";
  direct: boolean; transport: string; endpoints: string[]; rtt_ms?: number;
  connected_since?: string; last_error?: string; sources: string[];
}
export interface DiscoveryStatus { kind: string; health: string; detail?: string }
export interface LocalStatus {
  node_id: string; name: string; cluster: string; incarnation: number; started_at: string; version: string;
  transport: string; transports: string[]; listen?: string; advertised: string[]; tls: boolean; max_peers: number;
  discovery: DiscoveryStatus[] | DiscoveryStatus; probes?: unknown[];
  state?: NodeState; last_sequence: number;
}
export interface NodeStatusSample {
  cpu_percent: number; memory_used_bytes: number; memory_total_bytes: number; load: number[];
  network_rx_bytes: number; network_tx_bytes: number; uptime_seconds: number; sampled_at?: string;
}
export interface TaskView { task: string; state: string; exit_code: number; started_at?: string; restarts: number; message: string }
export interface AlertView { alert_id: string; severity: string; summary: string; details: Record<string, string>; raised_at: string }
export interface LogView { task: string; stream: string; line: string; at: string; dropped_before: number }
export interface NodeState { status?: NodeStatusSample; tasks: TaskView[]; alerts: AlertView[]; recent_logs: LogView[] }
export interface RemoteNode {
  node_id: string; incarnation: number; last_sequence: number; last_event_at?: string; freshness_ms?: number;
  path: string; linked: boolean; state: NodeState;
}
/** A command issued from this master or run on it, as its journal holds it. */
export interface CommandEntry {
  command_id: string; role: "issued" | "ran"; origin: string; target: string; action: string;
  stage: "sent" | "running" | "receipt" | "answered" | "no_answer" | "unreachable";
  status?: string; exit_code?: number; message?: string; output?: string;
  started_at_us: number; receipt_at_us?: number; finished_at_us?: number; version: number;
}
export interface ClusterStatus { local: LocalStatus; peers: PeerStatus[]; link_count: number; remote: RemoteNode[] }

export type Message =
  | { type: "snapshot"; seq: number; sent_at_us: number; keepalive_ms: number; status: ClusterStatus; edges: [string, string][]; commands?: CommandEntry[] }
  | { type: "delta"; seq: number; sent_at_us: number; edges?: [string, string][]; local?: LocalStatus; peers?: PeerStatus[]; nodes?: RemoteNode[]; gone?: string[]; commands?: CommandEntry[] }
  | { type: "heartbeat"; seq: number; sent_at_us: number };

/** One point of a sparkline: a node's status sample. */
export interface Sample { at: number; cpu: number; memory: number; load: number; rxRate: number; txRate: number; rx: number; tx: number }

export interface Model {
  seq: number;
  keepaliveMs: number;
  local?: LocalStatus;
  peers: PeerStatus[];
  remote: Record<string, RemoteNode>;
  edges: [string, string][];
  /** Per node, its last status samples, oldest first (at most `historyLength`). */
  history: Record<string, Sample[]>;
  /** Commands issued or run here, newest first (at most `commandLength`). */
  commands: CommandEntry[];
}

export const historyLength = 60;
export const commandLength = 50;
export const emptyModel: Model = { seq: 0, keepaliveMs: 1000, peers: [], remote: {}, edges: [], history: {}, commands: [] };

/** What applying a message did: the new model, or that a sequence number was skipped. */
export type Applied = { model: Model; gap: false } | { model: Model; gap: true };

export function apply(model: Model, message: Message): Applied {
  if (message.type === "snapshot") {
    const remote: Record<string, RemoteNode> = {};
    for (const node of message.status.remote) remote[node.node_id] = node;
    let next: Model = { seq: message.seq, keepaliveMs: message.keepalive_ms, local: message.status.local, peers: message.status.peers,
      remote, edges: message.edges, history: model.history, commands: mergeCommands([], message.commands ?? []) };
    next = record(next, message.status.local.node_id, message.status.local.state);
    for (const node of message.status.remote) next = record(next, node.node_id, node.state);
    return { model: next, gap: false };
  }
  if (message.seq !== model.seq + 1) return { model, gap: true };
  if (message.type === "heartbeat") return { model: { ...model, seq: message.seq }, gap: false };
  let next: Model = { ...model, seq: message.seq };
  if (message.edges) next.edges = message.edges;
  if (message.peers) next.peers = message.peers;
  if (message.local) { next.local = message.local; next = record(next, message.local.node_id, message.local.state); }
  if (message.nodes || message.gone) {
    const remote = { ...next.remote };
    for (const node of message.nodes ?? []) { remote[node.node_id] = node; next = record(next, node.node_id, node.state); }
    for (const id of message.gone ?? []) delete remote[id];
    next.remote = remote;
  }
  if (message.commands) next.commands = mergeCommands(next.commands, message.commands);
  return { model: next, gap: false };
}

/** Replaces each entry by command id and role, newest first. */
function mergeCommands(past: CommandEntry[], changed: CommandEntry[]): CommandEntry[] {
  const key = (entry: CommandEntry) => `${entry.role}/${entry.command_id}`;
  const byKey = new Map(past.map((entry) => [key(entry), entry]));
  for (const entry of changed) byKey.set(key(entry), entry);
  return [...byKey.values()].sort((x, y) => y.started_at_us - x.started_at_us).slice(0, commandLength);
}

/** Appends a node's status sample to its history when it is a new one. */
function record(model: Model, id: string, state: NodeState | undefined): Model {
  const status = state?.status;
  if (!status?.sampled_at) return model;
  const at = Date.parse(status.sampled_at);
  const past = model.history[id] ?? [];
  const last = past[past.length - 1];
  if (last && last.at >= at) return model;
  const seconds = last ? (at - last.at) / 1000 : 0;
  const rate = (now: number, before: number | undefined) => (before !== undefined && seconds > 0 && now >= before ? (now - before) / seconds : 0);
  const sample: Sample = {
    at, cpu: status.cpu_percent,
    memory: status.memory_total_bytes > 0 ? (100 * status.memory_used_bytes) / status.memory_total_bytes : 0,
    load: status.load[0] ?? 0,
    rx: status.network_rx_bytes, tx: status.network_tx_bytes,
    rxRate: rate(status.network_rx_bytes, last?.rx), txRate: rate(status.network_tx_bytes, last?.tx),
  };
  return { ...model, history: { ...model.history, [id]: [...past, sample].slice(-historyLength) } };
}

/** Every node the page knows: the local one first, then the rest by id. */
export function nodeIDs(model: Model): string[] {
  const ids = new Set<string>(Object.keys(model.remote));
  for (const [a, b] of model.edges) { ids.add(a); ids.add(b); }
  const local = model.local?.node_id;
  if (local) ids.delete(local);
  return [...(local ? [local] : []), ...[...ids].sort()];
}

/** Down: no path to it in the link graph, or a linked neighbour whose link is gone. */
export function isUp(model: Model, id: string): boolean {
  if (id === model.local?.node_id) return true;
  const node = model.remote[id];
  if (!node) return model.edges.some(([a, b]) => a === id || b === id);
  return node.path !== "unreachable" && !node.path.startsWith("direct (link now down)");
}

/** The transport of a link: this node's own links know it; for others, the one transport both ends advertise, if just one. */
export function edgeTransport(model: Model, a: string, b: string): string {
  const local = model.local?.node_id;
  const peerOf = (id: string) => model.peers.find((p) => p.node_id === id);
  if (a === local || b === local) {
    const peer = peerOf(a === local ? b : a);
    if (peer?.state === "connected") return peer.transport;
  }
  const schemes = (id: string) => new Set((peerOf(id)?.endpoints ?? []).map((e) => e.split("://")[0]));
  const common = [...schemes(a)].filter((s) => schemes(b).has(s));
  return common.length === 1 ? common[0] : "link";
}

/** The relay a node is reached through, from its path ("via n2"). */
export function relayOf(node: RemoteNode | undefined): string | undefined {
  return node?.path.startsWith("via ") ? node.path.slice(4) : undefined;
}

export function alertsOf(model: Model): (AlertView & { node: string })[] {
  const all: (AlertView & { node: string })[] = [];
  const add = (node: string, state?: NodeState) => state?.alerts.forEach((alert) => all.push({ ...alert, node }));
  if (model.local) add(model.local.node_id, model.local.state);
  for (const node of Object.values(model.remote)) add(node.node_id, node.state);
  return all.sort((x, y) => y.raised_at.localeCompare(x.raised_at));
}

export function stateOf(model: Model, id: string): NodeState | undefined {
  return id === model.local?.node_id ? model.local?.state : model.remote[id]?.state;
}

/** Every `/api/commands` error code as a sentence for a person. */
export const commandErrors: Record<string, string> = {
  unauthorized: "The master refused the API token. Open the dashboard with #token=<api.token>.",
  unknown_target: "No master by that id is known here: not linked, not discovered, not heard of.",
  unreachable: "The target is known but no path reaches it now.",
  timeout: "No result in time.",
  refused: "The target refused the command (its cluster.allowed_actions does not include it).",
  unknown_action: "The target has no such action.",
  body_too_large: "The request is too large.",
  not_found: "The master has no such route.",
  invalid_json: "The request was not valid JSON.",
  invalid_field: "A field of the request is wrong.",
  http_error: "The master refused the request.",
  network: "The master did not answer: is it running?",
};
