import { FormEvent, useEffect, useMemo, useRef, useState } from "react";
import { authHeaders, Connection, Feed } from "./feed";
import {
  alertsOf, CommandEntry, commandErrors, edgeTransport, emptyModel, isUp, Model, nodeIDs, relayOf, Sample, stateOf,
} from "./model";

export function App() {
  const [model, setModel] = useState<Model>(emptyModel);
  const [connection, setConnection] = useState<{ state: Connection; detail?: string }>({ state: "connecting" });
  const [lastMessage, setLastMessage] = useState(Date.now());
  const [now, setNow] = useState(Date.now());
  const [selected, setSelected] = useState<string | null>(null);
  const feed = useRef<Feed>();

  useEffect(() => {
    const instance = new Feed({
      model: (next) => { setModel(next); setLastMessage(Date.now()); },
      connection: (state, detail) => setConnection({ state, detail }),
    });
    feed.current = instance;
    instance.start();
    const clock = window.setInterval(() => setNow(Date.now()), 250);
    // A token typed into the address bar (#token=…) does not reload the page: connect with it now.
    const hashChanged = () => { if (location.hash.includes("token=")) instance.retry(); };
    window.addEventListener("hashchange", hashChanged);
    return () => { instance.stop(); window.clearInterval(clock); window.removeEventListener("hashchange", hashChanged); };
  }, []);

  const stale = now - lastMessage > 2 * model.keepaliveMs;
  const local = model.local?.node_id;
  const shown = selected ?? local ?? null;

  return (
    <>
      <header>
        <h1>AgentFlow</h1>
        <span>{local ? <>master <strong>{local}</strong> · cluster {model.local?.cluster}</> : "connecting…"}</span>
        <span className="muted" data-testid="connection">{connection.state}</span>
      </header>
      {connection.state === "unauthorized" && <TokenForm onToken={() => feed.current?.retry()} />}
      {stale && connection.state !== "unauthorized" && (
        <div className="banner" role="status" data-testid="stale">
          Stale: no word from this master for {Math.round((now - lastMessage) / 1000)} s ({connection.detail ?? connection.state}). What you see may be out of date.
        </div>
      )}
      <main>
        <section aria-labelledby="topology-title">
          <h2 id="topology-title">Topology</h2>
          <Topology model={model} selected={shown} onSelect={setSelected} now={now} />
        </section>
        <section aria-labelledby="detail-title">
          <h2 id="detail-title">Node {shown ?? ""}</h2>
          {shown ? <NodeDetail model={model} id={shown} /> : <p className="muted">No node yet.</p>}
        </section>
        <section aria-labelledby="console-title">
          <h2 id="console-title">Command console</h2>
          <CommandConsole model={model} />
          <h3>Commands here</h3>
          <CommandActivity model={model} />
        </section>
        <section aria-labelledby="alerts-title">
          <h2 id="alerts-title">Alerts</h2>
          <AlertsFeed model={model} />
          <h2>Discovery and signal</h2>
          <Discovery model={model} />
        </section>
      </main>
    </>
  );
}

function TokenForm({ onToken }: { onToken: () => void }) {
  const [value, setValue] = useState("");
  return (
    <form className="banner down" role="alert" onSubmit={(e) => { e.preventDefault(); sessionStorage.setItem("agentflow.token", value); onToken(); }}>
      <label htmlFor="token">This master needs its API token (api.token):</label>
      <input id="token" type="password" value={value} onChange={(e) => setValue(e.target.value)} autoComplete="off" />{" "}
      <button type="submit">Connect</button>
    </form>
  );
}

const size = 420;

function Topology({ model, selected, onSelect, now }: { model: Model; selected: string | null; onSelect: (id: string) => void; now: number }) {
  const ids = nodeIDs(model);
  const local = model.local?.node_id;
  // A stable layout: a circle in id order, the local node at the top.
  const position = useMemo(() => {
    const map: Record<string, { x: number; y: number }> = {};
    const r = size / 2 - 50;
    ids.forEach((id, i) => {
      const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, ids.length);
      map[id] = { x: size / 2 + r * Math.cos(angle), y: size / 2 + r * Math.sin(angle) };
    });
    return map;
  }, [ids.join(",")]);
  const rttOf = (a: string, b: string) => {
    if (a !== local && b !== local) return undefined;
    return model.peers.find((p) => p.node_id === (a === local ? b : a) && p.state === "connected")?.rtt_ms;
  };
  return (
    <svg viewBox={`0 0 ${size} ${size}`} width="100%" role="img" aria-label={`${ids.length} masters, ${model.edges.length} links`} data-testid="topology">
      {model.edges.map(([a, b]) => {
        const p = position[a], q = position[b];
        if (!p || !q) return null;
        const rtt = rttOf(a, b);
        const label = edgeTransport(model, a, b) + (rtt !== undefined ? ` ${rtt.toFixed(1)} ms` : "");
        return (
          <g key={`${a}-${b}`} className="edge-group" data-edge={`${a}-${b}`}>
            <line className={`edge${a === local || b === local ? " local" : ""}`} x1={p.x} y1={p.y} x2={q.x} y2={q.y} />
            <text className="edge-label" x={(p.x + q.x) / 2} y={(p.y + q.y) / 2 - 4} textAnchor="middle">{label}</text>
          </g>
        );
      })}
      {Object.values(model.remote).map((node) => {
        const relay = relayOf(node);
        const p = local ? position[local] : undefined, m = relay ? position[relay] : undefined, q = position[node.node_id];
        if (!relay || !p || !m || !q) return null;
        return <path key={`relay-${node.node_id}`} className="relay" data-relayed={node.node_id} d={`M${p.x},${p.y} Q${m.x},${m.y} ${q.x},${q.y}`}><title>{`${node.node_id} reached via ${relay}`}</title></path>;
      })}
      {ids.map((id) => {
        const p = position[id];
        const up = isUp(model, id);
        const alerts = stateOf(model, id)?.alerts.length ?? 0;
        const seenAt = model.remote[id]?.last_event_at;
        const seen = id === local ? "this master" : seenAt ? `seen ${ago(now - Date.parse(seenAt))}` : "not heard from";
        return (
          <g key={id} className={`node ${up ? "up" : "down"}${id === selected ? " selected" : ""}`} data-node={id} data-health={up ? "up" : "down"}
            transform={`translate(${p.x},${p.y})`} tabIndex={0} role="button" aria-pressed={id === selected}
            aria-label={`${id}${id === local ? " (this master)" : ""}: ${up ? "up" : "down"}, ${alerts} alert(s), ${seen}`}
            onClick={() => onSelect(id)} onKeyDown={(e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onSelect(id); } }}>
            <circle r={id === local ? 20 : 16} />
            {id === local && <circle r={25} fill="none" stroke="currentColor" strokeWidth={1} />}
            <text textAnchor="middle" dy="4">{id}</text>
            <text textAnchor="middle" dy={id === local ? 40 : 32} className="muted">{up ? "up" : "down"}{alerts ? ` · ${alerts}⚠` : ""}</text>
            <text textAnchor="middle" dy={id === local ? 53 : 45} className="muted">{seen}</text>
          </g>
        );
      })}
    </svg>
  );
}

function ago(ms: number): string {
  if (!isFinite(ms)) return "never";
  if (ms < 1000) return "now";
  if (ms < 60_000) return `${Math.round(ms / 1000)} s ago`;
  return `${Math.round(ms / 60_000)} min ago`;
}

function Spark({ values, label }: { values: number[]; label: string }) {
  const w = 120, h = 24;
  const max = Math.max(1e-9, ...values);
  const points = values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * w},${h - (v / max) * (h - 2) - 1}`).join(" ");
  return <svg className="spark" width={w} height={h} role="img" aria-label={label}><polyline points={points} /></svg>;
}

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function NodeDetail({ model, id }: { model: Model; id: string }) {
  const state = stateOf(model, id);
  const history: Sample[] = model.history[id] ?? [];
  const status = state?.status;
  const node = model.remote[id];
  const last = history[history.length - 1];
  return (
    <div data-testid="node-detail" data-node={id}>
      <p className="muted">{id === model.local?.node_id ? "this master" : `path: ${node?.path ?? "unknown"}`}</p>
      {status ? (
        <table>
          <tbody>
            <tr><th scope="row">CPU</th><td>{status.cpu_percent.toFixed(1)}%</td><td><Spark values={history.map((s) => s.cpu)} label="CPU history" /></td></tr>
            <tr><th scope="row">Memory</th><td>{bytes(status.memory_used_bytes)} / {bytes(status.memory_total_bytes)}</td><td><Spark values={history.map((s) => s.memory)} label="memory history" /></td></tr>
            <tr><th scope="row">Load</th><td>{status.load.map((l) => l.toFixed(2)).join(" ")}</td><td><Spark values={history.map((s) => s.load)} label="load history" /></td></tr>
            <tr><th scope="row">Network</th><td>↓ {bytes(last?.rxRate ?? 0)}/s ↑ {bytes(last?.txRate ?? 0)}/s</td><td><Spark values={history.map((s) => s.rxRate + s.txRate)} label="network history" /></td></tr>
          </tbody>
        </table>
      ) : <p className="muted">No status sample yet.</p>}
      <h3>Tasks</h3>
      {state?.tasks.length ? (
        <table data-testid="tasks">
          <thead><tr><th>task</th><th>state</th><th>exit</th><th>restarts</th><th>message</th></tr></thead>
          <tbody>{state.tasks.map((t) => <tr key={t.task} data-task={t.task}><td>{t.task}</td><td>{t.state}</td><td>{t.exit_code}</td><td>{t.restarts}</td><td>{t.message}</td></tr>)}</tbody>
        </table>
      ) : <p className="muted">No tasks.</p>}
      <h3>Log</h3>
      <div className="log" data-testid="log" aria-live="polite">
        {(state?.recent_logs ?? []).slice(-100).map((l, i) => <div key={`${l.at}/${i}`}>{l.at.slice(11, 23)} {l.task} {l.stream === "stderr" ? "!" : ">"} {l.line}</div>)}
      </div>
      <h3>Alerts</h3>
      {state?.alerts.length ? <ul>{state.alerts.map((a) => <li key={a.alert_id} className={`sev-${a.severity}`}>{a.severity}: {a.summary}</li>)}</ul> : <p className="muted">None.</p>}
    </div>
  );
}

function AlertsFeed({ model }: { model: Model }) {
  const alerts = alertsOf(model);
  if (!alerts.length) return <p className="muted" data-testid="alerts">No active alerts.</p>;
  return (
    <ul data-testid="alerts">
      {alerts.map((a) => <li key={`${a.node}/${a.alert_id}`} className={`sev-${a.severity}`}><strong>{a.node}</strong> {a.severity}: {a.summary} <span className="muted">{a.raised_at}</span></li>)}
    </ul>
  );
}

function Discovery({ model }: { model: Model }) {
  const local = model.local;
  if (!local) return null;
  const discovery = Array.isArray(local.discovery) ? local.discovery : [local.discovery];
  return (
    <table data-testid="discovery">
      <tbody>
        {discovery.map((d, i) => <tr key={i}><th scope="row">{d.kind}</th><td className={d.health === "ok" ? "ok" : "error"}>{d.health}</td><td>{d.detail ?? ""}</td></tr>)}
        <tr><th scope="row">transports</th><td colSpan={2}>{local.transports.join(", ")}{local.tls ? " (mTLS)" : ""}</td></tr>
        <tr><th scope="row">advertised</th><td colSpan={2}>{local.advertised.join(", ") || "—"}</td></tr>
        <tr><th scope="row">max_peers</th><td colSpan={2}>{local.max_peers || "full mesh"}</td></tr>
      </tbody>
    </table>
  );
}

interface CommandOutcome { ok: boolean; text: string; path?: string; attempt: number }

function CommandConsole({ model }: { model: Model }) {
  const ids = nodeIDs(model);
  const [target, setTarget] = useState("");
  const [action, setAction] = useState("ping");
  const [args, setArgs] = useState("");
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcomeOnly] = useState<CommandOutcome | null>(null);
  const attempts = useRef(0);
  const setOutcome = (value: Omit<CommandOutcome, "attempt">) => setOutcomeOnly({ ...value, attempt: ++attempts.current });
  const chosen = target || ids[0] || "";

  async function send(e: FormEvent) {
    e.preventDefault();
    const parsed: Record<string, string> = {};
    for (const line of args.split("\n").map((l) => l.trim()).filter(Boolean)) {
      const at = line.indexOf("=");
      if (at < 1) { setOutcome({ ok: false, text: `Arguments are key=value lines: "${line}" has no key.` }); return; }
      parsed[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    const path = chosen === model.local?.node_id ? "local" : model.remote[chosen]?.path ?? "unknown";
    setBusy(true);
    try {
      const response = await fetch("/api/commands", {
        method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify({ target: chosen, action, args: parsed }),
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok) {
        const output = typeof body.output?.text === "string" ? body.output.text : JSON.stringify(body.output?.text ?? body.output, null, 2);
        setOutcome({ ok: body.status === "ok", path,
          text: `${body.status} from ${body.target} (exit ${body.exit_code}); receipt ${body.receipt_ms ?? "—"} ms, result ${body.total_ms} ms\n${output ?? ""}${body.message ? `\n${body.message}` : ""}` });
      } else {
        const code: string = body.error?.code ?? `http_${response.status}`;
        setOutcome({ ok: false, path, text: `${commandErrors[code] ?? "The command failed."} [${code}] ${body.error?.message ?? ""}` });
      }
    } catch (error) {
      setOutcome({ ok: false, text: `${commandErrors.network} (${String(error)})` });
    } finally {
      setBusy(false);
    }
  }

  return (
    <form onSubmit={send} data-testid="console">
      <label htmlFor="cmd-target">Target</label>
      <input id="cmd-target" list="cmd-targets" value={target} placeholder={ids[0] ?? "node id"} onChange={(e) => setTarget(e.target.value.trim())} />
      <datalist id="cmd-targets">{ids.map((id) => <option key={id} value={id} />)}</datalist>
      <label htmlFor="cmd-action">Action</label>
      <input id="cmd-action" list="cmd-actions" value={action} onChange={(e) => setAction(e.target.value)} />
      <datalist id="cmd-actions">{["ping", "status", "task.start", "task.stop", "task.restart"].map((a) => <option key={a} value={a} />)}</datalist>
      <label htmlFor="cmd-args">Arguments (key=value, one per line)</label>
      <textarea id="cmd-args" rows={2} value={args} onChange={(e) => setArgs(e.target.value)} placeholder="task=web" />
      <div><button type="submit" disabled={busy || !chosen}>{busy ? "Sending…" : "Send"}</button></div>
      {outcome && (
        <div role="status" data-testid="command-result" data-attempt={outcome.attempt} className={outcome.ok ? "ok" : "error"}>
          {outcome.path && <div className="muted">path: {outcome.path}</div>}
          <pre>{outcome.text}</pre>
        </div>
      )}
    </form>
  );
}

/** What the stage of a journal entry means for a person. */
function describe(entry: CommandEntry): string {
  const ms = (at?: number) => (at !== undefined ? `${((at - entry.started_at_us) / 1000).toFixed(1)} ms` : "");
  switch (entry.stage) {
    case "sent": return "sent, no receipt yet";
    case "running": return "running";
    case "receipt": return `receipt after ${ms(entry.receipt_at_us)}, no result yet`;
    case "answered": return `${entry.status ?? "answered"}${entry.exit_code ? ` (exit ${entry.exit_code})` : ""} after ${ms(entry.finished_at_us)}`
      + (entry.role === "issued" && entry.receipt_at_us ? `, receipt after ${ms(entry.receipt_at_us)}` : "");
    case "no_answer": return `no answer after ${ms(entry.finished_at_us)}`;
    case "unreachable": return "unreachable";
  }
}

/** The commands this master issued (from any client) or ran (from any origin), live from the feed. */
function CommandActivity({ model }: { model: Model }) {
  if (!model.commands.length) return <p className="muted" data-testid="commands">No commands yet.</p>;
  return (
    <table data-testid="commands">
      <thead><tr><th>when</th><th>command</th><th>stage</th></tr></thead>
      <tbody>
        {model.commands.map((c) => (
          <tr key={`${c.role}/${c.command_id}`} data-command={c.command_id} data-role={c.role} data-stage={c.stage} data-status={c.status ?? ""}
            className={c.stage === "answered" ? (c.status === "ok" ? "ok" : "error") : c.stage === "no_answer" || c.stage === "unreachable" ? "error" : ""}>
            <td>{new Date(c.started_at_us / 1000).toISOString().slice(11, 23)}</td>
            <td>{c.role === "issued" ? `→ ${c.target}` : `← ${c.origin}`} {c.action}</td>
            <td title={[c.message, c.output].filter(Boolean).join("\n")}>{describe(c)}{c.message ? `: ${c.message}` : ""}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
