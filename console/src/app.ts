// Tributary's web console: plain TypeScript and the DOM over the real API (gRPC-Web, same origin).
// Pages are addressed by the URL's fragment (#/sources/<id>); tokens live only in sessionStorage.

import { create, fromJsonString, toJsonString, type JsonObject } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";
import {
  Admin,
  ExportFormat,
  ImportStatus,
  SourceKind,
  SourceSchema,
  SourceState,
  WritePolicy,
  type Export,
  type ExportRun,
  type ImportItem,
  type ImportResult,
  type Source,
  type SourceStatus,
} from "./gen/tributary/admin/v1/admin_pb.js";
import { Catalog, type Record as CatalogRecord } from "./gen/tributary/catalog/v1/catalog_pb.js";

// ---- tokens and clients ----------------------------------------------------------------------

const ADMIN_KEY = "tributary.adminToken";
const CONSUMER_KEY = "tributary.consumerToken";

function tokens(): { admin: string; consumer: string } {
  return {
    admin: sessionStorage.getItem(ADMIN_KEY) ?? "",
    consumer: sessionStorage.getItem(CONSUMER_KEY) ?? "",
  };
}

/** Admin calls carry the admin token; Catalog calls the consumer token (the admin token is not a reader). */
const bearer: Interceptor = (next) => async (req) => {
  const t = tokens();
  const token = req.service.typeName === Catalog.typeName ? t.consumer : t.admin;
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

const transport = createGrpcWebTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  interceptors: [bearer],
});
const admin = createClient(Admin, transport);
const catalog = createClient(Catalog, transport);

// ---- DOM helpers -----------------------------------------------------------------------------

type Child = Node | string | null | undefined | false;
type Attrs = { [name: string]: string | boolean | ((e: Event) => void) | undefined };

function h(tag: string, attrs: Attrs = {}, ...children: (Child | Child[])[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(name.replace(/^on/, ""), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, value);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return el;
}

const main = () => document.getElementById("main") as HTMLElement;

function link(href: string, text: string): HTMLElement {
  return h("a", { href }, text);
}

function fmtTime(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toISOString().replace(".000Z", "Z") : "—";
}

function enumName(e: { [k: number]: string }, v: number, prefix: string): string {
  const name = e[v] ?? String(v);
  return name.replace(prefix, "").toLowerCase() || "unspecified";
}

const statusName = (s: ImportStatus) => enumName(ImportStatus, s, "");
const stateName = (s: SourceState) => enumName(SourceState, s, "");
const kindName = (k: SourceKind) => enumName(SourceKind, k, "");

function table(headers: string[], rows: Child[][], caption: string): HTMLElement {
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      rows.length === 0
        ? h("tr", {}, h("td", { colspan: String(headers.length) }, "None."))
        : rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))),
    ),
  );
}

function dl(pairs: [string, Child][]): HTMLElement {
  return h("dl", {}, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]).flat());
}

function pre(json: unknown): HTMLElement {
  return h("pre", { class: "json", tabindex: "0" }, JSON.stringify(json, null, 2));
}

function field(label: string, input: HTMLElement, hint?: string): HTMLElement {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", {}, hint) : null);
}

// ---- errors in words -------------------------------------------------------------------------

/** UPPER_SNAKE names of gRPC status codes, as servers and `buf curl` print them. */
const CODE_NAMES = [
  "OK", "CANCELED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];

interface Violation {
  field: string;
  description: string;
}

function violations(err: unknown): Violation[] {
  if (!(err instanceof ConnectError)) return [];
  return err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
}

/** The error as a message: status code name, the server's message, and its field violations. */
function errorBox(err: unknown, what: string): HTMLElement {
  const e = ConnectError.from(err);
  const code = CODE_NAMES[e.code] ?? String(e.code);
  const v = violations(e);
  return h(
    "div",
    { class: "error", role: "alert" },
    h("p", {}, h("strong", {}, `${what} failed: ${code}`), e.rawMessage ? ` — ${e.rawMessage}` : ""),
    v.length
      ? h("ul", { class: "violations" }, v.map((x) => h("li", {}, h("code", {}, x.field || "(request)"), `: ${x.description}`)))
      : null,
    e.code === Code.Unauthenticated ? h("p", {}, "Your token was refused. ", link("#/signin", "Sign in again")) : null,
  );
}

/** Runs `load` and replaces `into`'s content with its result, or with the error in words. */
async function fill(into: HTMLElement, what: string, load: () => Promise<Child | Child[]>): Promise<void> {
  into.setAttribute("aria-busy", "true");
  try {
    const content = await load();
    into.replaceChildren(...[content].flat().filter((c): c is Node | string => !!c));
  } catch (err) {
    into.replaceChildren(errorBox(err, what));
  } finally {
    into.removeAttribute("aria-busy");
  }
}

// ---- pages -----------------------------------------------------------------------------------

function page(title: string, ...content: Child[]): void {
  document.title = `${title} · Tributary console`;
  const heading = h("h1", { tabindex: "-1" }, title);
  main().replaceChildren(heading, ...content.filter((c): c is Node | string => !!c));
  heading.focus();
}

function signIn(): void {
  const adminInput = h("input", { type: "password", autocomplete: "off", name: "admin" }) as HTMLInputElement;
  const consumerInput = h("input", { type: "password", autocomplete: "off", name: "consumer" }) as HTMLInputElement;
  const out = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    {
      onsubmit: async (e: Event) => {
        e.preventDefault();
        const adminToken = adminInput.value.trim();
        const consumerToken = consumerInput.value.trim();
        if (!adminToken && !consumerToken) {
          out.replaceChildren(h("p", { class: "error", role: "alert" }, "Enter an admin token or a consumer token."));
          return;
        }
        sessionStorage.setItem(ADMIN_KEY, adminToken);
        sessionStorage.setItem(CONSUMER_KEY, consumerToken);
        try {
          if (adminToken) await admin.listEntityTypes({ pageSize: 1 });
          if (consumerToken) await catalog.listEntityTypes({ pageSize: 1 });
        } catch (err) {
          sessionStorage.removeItem(ADMIN_KEY);
          sessionStorage.removeItem(CONSUMER_KEY);
          out.replaceChildren(errorBox(err, "Sign-in"));
          return;
        }
        renderNav();
        location.hash = adminToken ? "#/" : "#/records";
      },
    },
    field("Admin token", adminInput, "Manages everything; kept in this tab's session storage only."),
    field("Consumer token (optional)", consumerInput, "Reads records (read-only); needed for the Records pages and record counts."),
    h("button", { type: "submit" }, "Sign in"),
  );
  page("Sign in", form, out);
}

async function countRecords(slug: string): Promise<string> {
  return String((await catalog.countRecords({ entityType: slug })).count);
}

function overview(): void {
  const types = h("section", { "aria-labelledby": "ov-types" });
  const sources = h("section", { "aria-labelledby": "ov-sources" });
  const imports = h("section", { "aria-labelledby": "ov-imports" });
  page(
    "Overview",
    h("h2", { id: "ov-types" }, "Entity types"),
    types,
    h("h2", { id: "ov-sources" }, "Sources failing or in backoff"),
    sources,
    h("h2", { id: "ov-imports" }, "Recent failed or partial imports"),
    imports,
  );
  void fill(types, "Listing entity types", async () => {
    const r = await admin.listEntityTypes({ pageSize: 1000 });
    const hasReader = !!tokens().consumer;
    const counts = await Promise.all(
      r.entityTypes.map((t) =>
        hasReader ? countRecords(t.slug).catch((e) => `(${CODE_NAMES[ConnectError.from(e).code]})`) : "(needs a consumer token)",
      ),
    );
    return table(
      ["Entity type", "Name", "Records"],
      r.entityTypes.map((t, i) => [h("code", {}, t.slug), t.name, counts[i]]),
      "Entity types and their record counts",
    );
  });
  void fill(sources, "Listing sources", async () => {
    const all = await listSources();
    const statuses = await Promise.all(all.map((s) => admin.getSourceStatus({ id: s.id }).then((r) => r.status)));
    const bad = all
      .map((s, i) => [s, statuses[i]] as const)
      .filter(([, st]) => st && (st.state === SourceState.BACKOFF || st.lastError));
    return table(
      ["Source", "State", "Attempts", "Last error"],
      bad.map(([s, st]) => [link(`#/sources/${s.id}`, s.name), stateName(st!.state), String(st!.attempts), st!.lastError || "—"]),
      "Sources failing or in backoff",
    );
  });
  void fill(imports, "Listing import results", async () => {
    const r = await admin.listImportResults({ pageSize: 100 });
    const bad = r.importResults.filter((x) => x.status === ImportStatus.FAILED || x.status === ImportStatus.PARTIAL).slice(0, 20);
    return importsTable(bad, "Recent failed or partial imports");
  });
}

async function listSources(): Promise<Source[]> {
  const out: Source[] = [];
  let pageToken = "";
  do {
    const r = await admin.listSources({ pageSize: 1000, pageToken });
    out.push(...r.sources);
    pageToken = r.nextPageToken;
  } while (pageToken);
  return out;
}

function sourcesPage(): void {
  const list = h("div");
  page("Sources", h("p", {}, link("#/sources/new", "Create a source")), list);
  void fill(list, "Listing sources", async () => {
    const all = await listSources();
    const statuses = await Promise.all(
      all.map((s) => admin.getSourceStatus({ id: s.id }).then((r) => r.status, () => undefined)),
    );
    return table(
      ["Name", "Kind", "Connector", "State", "Last run", "Next run", "Last error", "Last counts"],
      all.map((s, i) => {
        const st = statuses[i];
        return [
          link(`#/sources/${s.id}`, s.name),
          kindName(s.kind),
          h("code", {}, s.connector),
          st ? (s.enabled === false ? "disabled" : stateName(st.state)) : "—",
          fmtTime(st?.lastRunAt),
          fmtTime(st?.nextRunAt),
          st?.lastError || "—",
          st ? counts(st) : "—",
        ];
      }),
      "Sources",
    );
  });
}

/** The non-zero counts, e.g. "2 created, 1 failed". */
function counts(x: SourceStatus | ImportResult): string {
  const all: [bigint, string][] = [
    [x.created, "created"],
    [x.updated, "updated"],
    [x.unchanged, "unchanged"],
    [x.skipped, "skipped"],
    [x.failed, "failed"],
  ];
  const some = all.filter(([n]) => n > 0n).map(([n, what]) => `${n} ${what}`);
  return some.length ? some.join(", ") : "none";
}

/** A JSON editor for a source: the server's violations are listed at the editor, by field. */
function sourceEditor(initial: Source | undefined, save: (s: Source) => Promise<Source>): HTMLElement {
  const template = initial ?? create(SourceSchema, { name: "", kind: SourceKind.HTTP_JSON, connector: "" });
  const area = h("textarea", { rows: "18", spellcheck: "false", "aria-describedby": "source-json-errors" }) as HTMLTextAreaElement;
  area.value = JSON.stringify(JSON.parse(toJsonString(SourceSchema, template)), null, 2);
  const errors = h("div", { id: "source-json-errors", "aria-live": "polite" });
  return h(
    "form",
    {
      class: "editor",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        let source: Source;
        try {
          source = fromJsonString(SourceSchema, area.value);
        } catch (err) {
          errors.replaceChildren(h("p", { class: "error", role: "alert" }, `Not a source in JSON: ${(err as Error).message}`));
          area.setAttribute("aria-invalid", "true");
          return;
        }
        try {
          const saved = await save(source);
          errors.replaceChildren();
          area.removeAttribute("aria-invalid");
          location.hash = `#/sources/${saved.id}`;
          if (initial) route();
        } catch (err) {
          area.setAttribute("aria-invalid", "true");
          errors.replaceChildren(errorBox(err, "Saving the source"));
        }
      },
    },
    field("Source (JSON)", area, "Secrets show as \"<redacted>\"; leave them so to keep them."),
    errors,
    h("button", { type: "submit" }, initial ? "Save source" : "Create source"),
  );
}

function newSourcePage(): void {
  page(
    "Create a source",
    sourceEditor(undefined, async (s) => (await admin.createSource({ source: s })).source!),
  );
}

function sourcePage(id: string): void {
  const body = h("div");
  const actions = h("div", { class: "actions", "aria-live": "polite" });
  page("Source", body);
  const load = () =>
    fill(body, "Reading the source", async () => {
      const [{ source }, { status }] = await Promise.all([admin.getSource({ id }), admin.getSourceStatus({ id })]);
      const s = source!;
      const st = status!;
      document.querySelector("h1")!.textContent = `Source ${s.name}`;
      const results = await sourceImports(s);
      const act = (label: string, run: () => Promise<unknown>) =>
        h(
          "button",
          {
            type: "button",
            onclick: async () => {
              try {
                await run();
                await load();
                actions.prepend(h("p", { role: "status" }, `${label}: done.`));
              } catch (err) {
                actions.replaceChildren(errorBox(err, label));
              }
            },
          },
          label,
        );
      const enabled = s.enabled !== false;
      actions.replaceChildren();
      return [
        h(
          "div",
          { class: "buttons" },
          act("Trigger", () => admin.triggerSource({ id })),
          act("Cancel", () => admin.cancelSource({ id })),
          act(enabled ? "Disable" : "Enable", () => admin.updateSource({ source: { ...s, enabled: !enabled } })),
        ),
        actions,
        h("h2", {}, "Status"),
        dl([
          ["State", enabled ? stateName(st.state) : `${stateName(st.state)} (disabled)`],
          ["Attempts", String(st.attempts)],
          ["Last error", st.lastError || "—"],
          ["Last run", fmtTime(st.lastRunAt)],
          ["Next run", fmtTime(st.nextRunAt)],
          ["Cursor", st.cursor ? h("code", {}, st.cursor) : "—"],
          ["Lease holder", st.leaseHolder || "—"],
          ["Lease expires", fmtTime(st.leaseExpiresAt)],
          ["Marks", String(st.marks)],
          ["Current cycle", `${st.pages} pages; ${counts(st)}`],
          ["Last import result", st.lastImportResult ? link(`#/imports/${st.lastImportResult}`, st.lastImportResult) : "—"],
        ]),
        h("h2", {}, "Import results"),
        importsTable(results, `Import results of ${s.name}, newest first`),
        h("h2", {}, "Settings"),
        sourceEditor(s, async (edited) => (await admin.updateSource({ source: { ...edited, id } })).source!),
      ];
    });
  void load();
}

async function sourceImports(s: Source): Promise<ImportResult[]> {
  return (await admin.listImportResults({ source: s.id, pageSize: 100 })).importResults;
}

function importsTable(results: ImportResult[], caption: string): HTMLElement {
  return table(
    ["Result", "Status", "Connector", "Source", "Started", "Counts"],
    results.map((r) => [
      link(`#/imports/${r.id}`, r.id.slice(0, 12)),
      h("span", { class: `status-${statusName(r.status)}` }, statusName(r.status)),
      h("code", {}, r.connector),
      r.source ? link(`#/sources/${r.source}`, r.source.slice(0, 12)) : "—",
      fmtTime(r.startedAt),
      counts(r),
    ]),
    caption,
  );
}

function importsPage(): void {
  const connector = h("input", { name: "connector" }) as HTMLInputElement;
  const source = h("input", { name: "source" }) as HTMLInputElement;
  const status = h(
    "select",
    { name: "status" },
    h("option", { value: "" }, "any"),
    [ImportStatus.SUCCEEDED, ImportStatus.PARTIAL, ImportStatus.FAILED, ImportStatus.CANCELED].map((s) =>
      h("option", { value: String(s) }, statusName(s)),
    ),
  ) as HTMLSelectElement;
  const out = h("div");
  let pageToken = "";
  const load = (append: boolean) =>
    fill(out, "Listing import results", async () => {
      // The server filters, so every page is full and paging reaches every match.
      const r = await admin.listImportResults({
        connector: connector.value.trim(),
        source: source.value.trim(),
        status: status.value ? (Number(status.value) as ImportStatus) : ImportStatus.UNSPECIFIED,
        pageSize: 100,
        pageToken: append ? pageToken : "",
      });
      pageToken = r.nextPageToken;
      return [
        importsTable(r.importResults, "Import results, newest first"),
        pageToken ? h("button", { type: "button", onclick: () => load(true) }, "Next page") : null,
      ];
    });
  page(
    "Import results",
    h(
      "form",
      { class: "filters", onsubmit: (e: Event) => (e.preventDefault(), void load(false)) },
      field("Connector id", connector),
      field("Source id", source),
      field("Status", status),
      h("button", { type: "submit" }, "Filter"),
    ),
    out,
  );
  void load(false);
}

function itemsTable(items: ImportItem[], caption: string): HTMLElement {
  return table(
    ["Item", "Reason", "Error", "Data"],
    items.map((i) => [h("code", {}, i.id || "—"), i.reason, i.error, i.data ? h("pre", { class: "data" }, i.data) : "—"]),
    caption,
  );
}

function importPage(id: string): void {
  const body = h("div");
  page(`Import result ${id.slice(0, 12)}`, body);
  void fill(body, "Reading the import result", async () => {
    const r = (await admin.getImportResult({ id })).importResult!;
    const ms = r.startedAt && r.endedAt ? timestampDate(r.endedAt).getTime() - timestampDate(r.startedAt).getTime() : undefined;
    return [
      dl([
        ["Status", statusName(r.status)],
        ["Connector", h("code", {}, r.connector)],
        ["Source", r.source ? link(`#/sources/${r.source}`, r.source) : "—"],
        ["Session", r.sessionId || "—"],
        ["Started", fmtTime(r.startedAt)],
        ["Ended", fmtTime(r.endedAt)],
        ["Duration", ms === undefined ? "—" : `${(ms / 1000).toFixed(1)} s`],
        ["Pages", String(r.pages)],
        ["Counts", `created ${r.created}, updated ${r.updated}, unchanged ${r.unchanged}, skipped ${r.skipped}, failed ${r.failed}, deleted ${r.deleted}, swept ${r.swept}, sweep refused ${r.sweepRefused}`],
        ["Items not listed", String(r.itemsNotListed)],
      ]),
      h("h2", {}, "Errors"),
      r.errors.length ? h("ul", {}, r.errors.map((e) => h("li", {}, e))) : h("p", {}, "None."),
      h("h2", {}, "Failed items"),
      itemsTable(r.failedItems, "Failed items"),
      h("h2", {}, "Skipped items"),
      itemsTable(r.skippedItems, "Skipped items"),
    ];
  });
}

// ---- records ---------------------------------------------------------------------------------

/** The live tail's stream; a new page or a new listing stops the old one. */
let watching: AbortController | undefined;

function recordsPage(): void {
  if (!tokens().consumer) {
    page("Records", h("p", { role: "alert" }, "Records are read through the Catalog with a consumer token. ", link("#/signin", "Sign in with one")));
    return;
  }
  const typeSelect = h("select", { name: "entity_type" }) as HTMLSelectElement;
  const filter = h("input", { name: "filter", placeholder: '{"entity.population": {"$gt": 1000000}}', class: "wide" }) as HTMLInputElement;
  const orderBy = h("input", { name: "order_by", placeholder: "entity.population desc, id" }) as HTMLInputElement;
  const out = h("div");
  const tail = h("ol", { class: "tail", "aria-live": "polite", "aria-label": "Live changes" });
  const tailState = h("p", { class: "tail-state" }, "Not watching.");
  let pageToken = "";
  let pageNo = 1;

  const startTail = (entityType: string, after: bigint) => {
    watching?.abort();
    const ctl = new AbortController();
    watching = ctl;
    tail.replaceChildren();
    tailState.textContent = `Watching ${entityType} after sequence ${after}.`;
    void (async () => {
      try {
        for await (const ev of catalog.watch({ entityType, after }, { signal: ctl.signal })) {
          const line =
            ev.event.case === "upserted"
              ? h("li", {}, `#${ev.sequence} upserted `, link(`#/records/${encodeURIComponent(ev.event.value.key)}`, ev.event.value.id), ` ${ev.event.value.name}`)
              : h("li", {}, `#${ev.sequence} deleted ${ev.event.value ?? ""}`);
          tail.prepend(line);
        }
        tailState.textContent = "The live tail ended.";
      } catch (err) {
        if (ctl.signal.aborted) return;
        tailState.replaceChildren(errorBox(err, "Watching"));
      }
    })();
  };

  const load = (next: boolean) =>
    fill(out, "Listing records", async () => {
      const entityType = typeSelect.value;
      const r = await catalog.listRecords({
        entityType,
        filter: filter.value.trim(),
        orderBy: orderBy.value.trim(),
        pageSize: 50,
        pageToken: next ? pageToken : "",
      });
      pageNo = next ? pageNo + 1 : 1;
      pageToken = r.nextPageToken;
      if (!next) startTail(entityType, r.sequence);
      return [
        recordsTable(r.records, `Records of ${entityType}, page ${pageNo}`),
        pageToken ? h("button", { type: "button", onclick: () => load(true) }, "Next page") : h("p", {}, "No more records."),
      ];
    });

  page(
    "Records",
    h(
      "form",
      { class: "filters", onsubmit: (e: Event) => (e.preventDefault(), void load(false)) },
      field("Entity type", typeSelect),
      field("Filter", filter, "A JSON filter object; empty lists all."),
      field("Order by", orderBy),
      h("button", { type: "submit" }, "List"),
    ),
    out,
    h("h2", {}, "Live tail"),
    tailState,
    tail,
  );
  void (async () => {
    try {
      const r = await catalog.listEntityTypes({ pageSize: 1000 });
      typeSelect.replaceChildren(...r.entityTypes.map((t) => h("option", { value: t.slug }, `${t.name} (${t.slug})`)));
      if (r.entityTypes.length === 0) out.replaceChildren(h("p", {}, "This token reads no entity type."));
      else await load(false);
    } catch (err) {
      out.replaceChildren(errorBox(err, "Listing entity types"));
    }
  })();
}

function recordsTable(records: CatalogRecord[], caption: string): HTMLElement {
  return table(
    ["Id", "Name", "Connector", "Version", "Updated"],
    records.map((r) => [
      link(`#/records/${encodeURIComponent(r.key)}`, r.id),
      r.name,
      h("code", {}, r.connector),
      String(r.version),
      fmtTime(r.updatedAt),
    ]),
    caption,
  );
}

function recordPage(key: string): void {
  const body = h("div");
  page("Record", body);
  void fill(body, "Reading the record", async () => {
    const r = (await catalog.getRecord({ key })).record!;
    document.querySelector("h1")!.textContent = `Record ${r.id}`;
    return [
      dl([
        ["Name", r.name],
        ["Entity type", h("code", {}, r.entityType)],
        ["Key", h("code", {}, r.key)],
        ["Connector", h("code", {}, r.connector)],
        ["Source", r.source || "—"],
        ["Checksum", h("code", {}, r.checksum)],
        ["Version", String(r.version)],
        ["Created", fmtTime(r.createdAt)],
        ["Updated", fmtTime(r.updatedAt)],
        ["Edited", fmtTime(r.editedAt)],
      ]),
      h("h2", {}, "Entity"),
      pre(r.entity ?? {}),
      h("h2", {}, "Instance"),
      pre(r.instance ?? {}),
    ];
  });
}

// ---- entity types and connectors -------------------------------------------------------------

function entityTypesPage(): void {
  const list = h("div");
  const slug = h("input", { name: "slug", required: true, pattern: "[a-z0-9-]{1,64}" }) as HTMLInputElement;
  const name = h("input", { name: "name", required: true }) as HTMLInputElement;
  const description = h("input", { name: "description" }) as HTMLInputElement;
  const schema = h("textarea", { name: "schema", rows: "6", spellcheck: "false" }) as HTMLTextAreaElement;
  schema.value = '{"type": "object"}';
  const out = h("div", { "aria-live": "polite" });
  const load = () =>
    fill(list, "Listing entity types", async () => {
      const r = await admin.listEntityTypes({ pageSize: 1000 });
      return table(
        ["Slug", "Name", "Description", "Schema version", "Created"],
        r.entityTypes.map((t) => [h("code", {}, t.slug), t.name, t.description, String(t.schemaVersion), fmtTime(t.createdAt)]),
        "Entity types",
      );
    });
  page(
    "Entity types",
    list,
    h("h2", {}, "Create an entity type"),
    h(
      "form",
      {
        onsubmit: async (e: Event) => {
          e.preventDefault();
          let parsed: JsonObject;
          try {
            parsed = JSON.parse(schema.value) as JsonObject;
          } catch (err) {
            out.replaceChildren(h("p", { class: "error", role: "alert" }, `The schema is not JSON: ${(err as Error).message}`));
            return;
          }
          try {
            const r = await admin.createEntityType({
              entityType: { slug: slug.value.trim(), name: name.value.trim(), description: description.value, schema: parsed },
            });
            out.replaceChildren(h("p", { role: "status" }, `Created ${r.entityType?.slug}.`));
            await load();
          } catch (err) {
            out.replaceChildren(errorBox(err, "Creating the entity type"));
          }
        },
      },
      field("Slug", slug, "1 to 64 of a-z, 0-9 and -."),
      field("Name", name),
      field("Description", description),
      field("JSON Schema of the entity", schema),
      h("button", { type: "submit" }, "Create entity type"),
    ),
    out,
  );
  void load();
}

function tokenShownOnce(label: string, token: string): HTMLElement {
  return h(
    "div",
    { class: "token", role: "status" },
    h("p", {}, h("strong", {}, label), " — shown once; store it now:"),
    h("output", { class: "secret", tabindex: "0" }, token),
  );
}

function connectorsPage(): void {
  const list = h("div");
  const out = h("div", { "aria-live": "polite" });
  const name = h("input", { name: "name", required: true }) as HTMLInputElement;
  const entityType = h("select", { name: "entity_type" }) as HTMLSelectElement;
  const policy = h(
    "select",
    { name: "write_policy" },
    [WritePolicy.IMPORTER, WritePolicy.IMPORTER_CREATE_ONLY, WritePolicy.IMPORTER_UPDATE_UNLESS_EDITED].map((p) =>
      h("option", { value: String(p) }, enumName(WritePolicy, p, "")),
    ),
  ) as HTMLSelectElement;
  const createButton = h("button", { type: "submit", disabled: true }, "Create connector") as HTMLButtonElement;
  const load = () =>
    fill(list, "Listing connectors", async () => {
      const [cs, ts] = await Promise.all([admin.listConnectors({ pageSize: 1000 }), admin.listEntityTypes({ pageSize: 1000 })]);
      const chosen = entityType.value;
      entityType.replaceChildren(...ts.entityTypes.map((t) => h("option", { value: t.slug }, t.slug)));
      if (chosen) entityType.value = chosen;
      // The form can be sent once it offers the entity types.
      createButton.disabled = ts.entityTypes.length === 0;
      return table(
        ["Name", "Id", "Entity type", "Write policy", "Created", "Token"],
        cs.connectors.map((c) => [
          c.name,
          h("code", {}, c.id),
          h("code", {}, c.entityType),
          enumName(WritePolicy, c.writePolicy || WritePolicy.IMPORTER, ""),
          fmtTime(c.createdAt),
          h(
            "button",
            {
              type: "button",
              "aria-label": `Rotate the token of ${c.name}`,
              onclick: async () => {
                if (!confirm(`Rotate the token of ${c.name}? The old token stops working.`)) return;
                try {
                  const r = await admin.rotateConnectorToken({ id: c.id });
                  out.replaceChildren(tokenShownOnce(`New token of ${c.name}`, r.token));
                } catch (err) {
                  out.replaceChildren(errorBox(err, "Rotating the token"));
                }
              },
            },
            "Rotate token",
          ),
        ]),
        "Connectors",
      );
    });
  page(
    "Connectors",
    list,
    h("h2", {}, "Create a connector"),
    h(
      "form",
      {
        onsubmit: async (e: Event) => {
          e.preventDefault();
          try {
            const r = await admin.createConnector({
              connector: { name: name.value.trim(), entityType: entityType.value, writePolicy: Number(policy.value) },
            });
            out.replaceChildren(tokenShownOnce(`Token of ${r.connector?.name}`, r.token));
            name.value = "";
            await load();
          } catch (err) {
            out.replaceChildren(errorBox(err, "Creating the connector"));
          }
        },
      },
      field("Name", name),
      field("Entity type", entityType),
      field("Write policy", policy),
      createButton,
    ),
    out,
  );
  void load();
}

// ---- exports ---------------------------------------------------------------------------------

// An unspecified format is NDJSON, the default.
const formatName = (f: ExportFormat) => enumName(ExportFormat, f === ExportFormat.UNSPECIFIED ? ExportFormat.NDJSON : f, "");

function schedule(e: Export): string {
  const s = e.schedule;
  if (s.case === "interval") return `every ${Number(s.value.seconds)} s`;
  if (s.case === "cron") return `cron ${s.value}`;
  return "on demand";
}

function bytes(n: bigint): string {
  const v = Number(n);
  return v < 1024 * 1024 ? `${(v / 1024).toFixed(1)} KiB` : `${(v / 1024 / 1024).toFixed(1)} MiB`;
}

/** A "Run now" button: runs the export, then calls `done` with the run (or shows the error). */
function runNowButton(e: Export, out: HTMLElement, done: (run: ExportRun) => void): HTMLElement {
  const button = h("button", { type: "button", "aria-label": `Run ${e.name} now` }, "Run now") as HTMLButtonElement;
  button.onclick = async () => {
    button.disabled = true;
    out.replaceChildren(h("p", { role: "status" }, `Running ${e.name}…`));
    try {
      const run = (await admin.runExport({ id: e.id })).run!;
      out.replaceChildren(
        h("p", { role: "status" }, `Run of ${e.name}: ${statusName(run.status)}, ${run.records} records`, run.error ? ` (${run.error})` : ""),
      );
      done(run);
    } catch (err) {
      out.replaceChildren(errorBox(err, `Running ${e.name}`));
    } finally {
      button.disabled = false;
    }
  };
  return button;
}

function exportsPage(): void {
  const list = h("div");
  const out = h("div", { "aria-live": "polite" });
  const load = () =>
    fill(list, "Listing exports", async () => {
      const r = await admin.listExports({ pageSize: 1000 });
      if (!r.exports.length) return h("p", {}, "No exports yet: create them with CreateExport or `tributary export create`.");
      return table(
        ["Name", "Entity type", "Format", "Destination", "Schedule", "Enabled", ""],
        r.exports.map((e) => [
          link(`#/exports/${e.id}`, e.name),
          h("code", {}, e.entityType),
          formatName(e.format),
          h("code", {}, e.destination),
          schedule(e),
          e.enabled === false ? "no" : "yes",
          runNowButton(e, out, () => (location.hash = `#/exports/${e.id}`)),
        ]),
        "Exports",
      );
    });
  page("Exports", out, list);
  void load();
}

function runsTable(runs: ExportRun[], caption: string): HTMLElement {
  return table(
    ["Status", "Started", "Ended", "Records", "Written", "Location", "Error"],
    runs.map((r) => [
      h("span", { class: `status-${statusName(r.status)}` }, statusName(r.status)),
      h("span", { class: "nowrap" }, fmtTime(r.startedAt)),
      h("span", { class: "nowrap" }, fmtTime(r.endedAt)),
      String(r.records),
      h("span", { class: "nowrap" }, bytes(r.bytes)),
      h("code", {}, r.location || "—"),
      r.error || "—",
    ]),
    caption,
  );
}

function exportPage(id: string): void {
  const body = h("div");
  const out = h("div", { "aria-live": "polite" });
  const runs = h("div");
  let pageToken = "";
  const loadRuns = (append: boolean) =>
    fill(runs, "Listing the export's runs", async () => {
      const r = await admin.listExportRuns({ exportId: id, pageSize: 50, pageToken: append ? pageToken : "" });
      pageToken = r.nextPageToken;
      return [
        r.runs.length ? runsTable(r.runs, "Runs, newest first") : h("p", {}, "No runs yet."),
        pageToken ? h("button", { type: "button", onclick: () => loadRuns(true) }, "Next page") : null,
      ];
    });
  page(`Export ${id.slice(0, 12)}`, body, out, h("h2", {}, "Runs"), runs);
  void fill(body, "Reading the export", async () => {
    const e = (await admin.getExport({ id })).export!;
    const title = document.querySelector("h1");
    if (title) title.textContent = `Export ${e.name}`;
    return [
      dl([
        ["Entity type", h("code", {}, e.entityType)],
        ["Filter", e.filter ? h("code", {}, e.filter) : "none (every record)"],
        ["Format", formatName(e.format)],
        ["Destination", h("code", {}, e.destination)],
        ["Schedule", schedule(e)],
        ["Enabled", e.enabled === false ? "no" : "yes"],
        ["Created", fmtTime(e.createdAt)],
        ["Updated", fmtTime(e.updatedAt)],
      ]),
      runNowButton(e, out, () => void loadRuns(false)),
    ];
  });
  void loadRuns(false);
}

// ---- navigation ------------------------------------------------------------------------------

function renderNav(): void {
  const t = tokens();
  const nav = document.getElementById("nav") as HTMLElement;
  const items: [string, string][] = t.admin
    ? [
        ["#/", "Overview"],
        ["#/sources", "Sources"],
        ["#/imports", "Import results"],
        ["#/records", "Records"],
        ["#/entity-types", "Entity types"],
        ["#/connectors", "Connectors"],
        ["#/exports", "Exports"],
      ]
    : t.consumer
      ? [["#/records", "Records"]]
      : [];
  nav.replaceChildren(
    h("ul", {}, items.map(([href, text]) => h("li", {}, link(href, text)))),
    t.admin || t.consumer
      ? h(
          "button",
          {
            type: "button",
            onclick: () => {
              sessionStorage.removeItem(ADMIN_KEY);
              sessionStorage.removeItem(CONSUMER_KEY);
              renderNav();
              location.hash = "#/signin";
            },
          },
          "Sign out",
        )
      : "",
  );
}

function route(): void {
  watching?.abort();
  watching = undefined;
  const path = location.hash.replace(/^#/, "") || "/";
  const t = tokens();
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("#nav a")) {
    const here = a.getAttribute("href") === `#/${parts[0] ?? ""}`;
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (parts[0] === "signin" || (!t.admin && !t.consumer)) return signIn();
  if (parts[0] === "records") return parts[1] ? recordPage(parts[1]) : recordsPage();
  if (!t.admin) {
    page("Admin only", h("p", { role: "alert" }, "This page needs the admin token. ", link("#/signin", "Sign in")));
    return;
  }
  switch (parts[0]) {
    case undefined:
      return overview();
    case "sources":
      return parts[1] === "new" ? newSourcePage() : parts[1] ? sourcePage(parts[1]) : sourcesPage();
    case "imports":
      return parts[1] ? importPage(parts[1]) : importsPage();
    case "entity-types":
      return entityTypesPage();
    case "connectors":
      return connectorsPage();
    case "exports":
      return parts[1] ? exportPage(parts[1]) : exportsPage();
    default:
      page("Not found", h("p", {}, "No such page. ", link("#/", "Overview")));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (e) => {
  main().append(errorBox(e.reason, "The page"));
});
renderNav();
route();
