// The socket to /api/ws: connects, reconnects with backoff, and asks for a
// fresh snapshot when a sequence number is skipped.
import { apply, emptyModel, Message, Model } from "./model";

export type Connection = "connecting" | "live" | "reconnecting" | "unauthorized";

export interface FeedListener {
  model(model: Model): void;
  connection(state: Connection, detail?: string): void;
  /** Called after each applied message, with the message (the latency probe of the tests uses it). */
  message?(message: Message): void;
}

export function token(): string | null {
  const hash = new URLSearchParams(location.hash.slice(1));
  const fromHash = hash.get("token");
  if (fromHash) {
    sessionStorage.setItem("agentflow.token", fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("agentflow.token");
}

export function authHeaders(): Record<string, string> {
  const value = token();
  return value ? { Authorization: `Bearer ${value}` } : {};
}

export class Feed {
  private socket?: WebSocket;
  private model: Model = emptyModel;
  private delay = 250;
  private stopped = false;
  private timer?: number;

  constructor(private readonly listener: FeedListener) {}

  start(): void { this.connect(); }

  /** After a new token: connect again at once. */
  retry(): void {
    window.clearTimeout(this.timer);
    this.stopped = false;
    this.delay = 250;
    const old = this.socket;
    if (old) { old.onclose = null; old.close(); }
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.timer);
    this.socket?.close();
  }

  private connect(): void {
    const value = token();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = value ? `?access_token=${encodeURIComponent(value)}` : "";
    const socket = new WebSocket(`${scheme}://${location.host}/api/ws${query}`);
    this.socket = socket;
    let opened = false;
    socket.onopen = () => { opened = true; this.delay = 250; };
    socket.onmessage = (event) => {
      let message: Message;
      try { message = JSON.parse(event.data as string) as Message; } catch { return; }
      const applied = apply(this.model, message);
      if (applied.gap) {
        // A message was missed: the next one the master sends is a snapshot.
        socket.send(JSON.stringify({ type: "resync" }));
        return;
      }
      this.model = applied.model;
      this.listener.model(this.model);
      this.listener.connection("live");
      this.listener.message?.(message);
    };
    socket.onclose = () => {
      if (this.stopped) return;
      if (!opened) void this.checkToken();
      this.listener.connection("reconnecting", `retrying in ${Math.round(this.delay)} ms`);
      this.timer = window.setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(5000, this.delay * 2) * (0.8 + Math.random() * 0.4);
    };
  }

  /** A refused upgrade has no status in the browser's API: ask an ordinary route why. */
  private async checkToken(): Promise<void> {
    try {
      const response = await fetch("/api/cluster/status", { headers: authHeaders() });
      if (response.status === 401) {
        // Without the right token nothing will change: wait for one.
        this.stopped = true;
        window.clearTimeout(this.timer);
        this.listener.connection("unauthorized");
      }
    } catch { /* the master is down: keep retrying */ }
  }
}
