// The "forgeline report" tab of a DAG run: a React plugin (`react_apps`) that Airflow's UI
// imports as an ES module and renders in its own page, with no iframe. It fetches the run's
// report from the forgeline app with the UI's session cookie and shows it in a shadow root,
// so the report's CSS and Airflow's stay apart. Hand-written: no build step, no imports.

const React = globalThis.React; // Airflow's UI shares its React with plugins
if (React === undefined) {
  throw new Error("forgeline report: globalThis.React is not set; this Airflow UI does not " +
                  "share React with plugins");
}

const HOST_STYLE = ":host { all: initial; display: block; background: #fff; color: #1f2937; }";

function show(root, nodes) {
  const style = document.createElement("style");
  style.textContent = HOST_STYLE;
  root.replaceChildren(style, ...nodes);
}

function reportUrl(dagId, runId) {
  const run = `${encodeURIComponent(dagId)}/runs/${encodeURIComponent(runId)}`;
  return new URL(`forgeline/dags/${run}/report`, document.baseURI);
}

function message(text) {
  const body = document.createElement("body");
  body.style.cssText = "font-family: system-ui, sans-serif; margin: 2rem";
  body.textContent = text;
  return body;
}

// The report page's <style>s and <body>, its links made absolute (they are relative to the
// report's URL, not to Airflow's page); the run's artifacts download rather than navigate.
function reportNodes(html, url) {
  const page = new DOMParser().parseFromString(html, "text/html");
  page.querySelectorAll("script, iframe, object, embed").forEach((node) => node.remove());
  for (const node of page.querySelectorAll("*")) {
    for (const { name } of [...node.attributes]) {
      if (name.startsWith("on")) node.removeAttribute(name);
    }
  }
  const artifacts = new URL("artifacts/", url).pathname;
  for (const link of page.querySelectorAll("a[href]")) {
    link.href = new URL(link.getAttribute("href"), url).href;
    if (new URL(link.href).pathname.startsWith(artifacts)) link.setAttribute("download", "");
  }
  for (const img of page.querySelectorAll("img[src]")) {
    img.src = new URL(img.getAttribute("src"), url).href;
  }
  return [...page.head.querySelectorAll("style"), document.adoptNode(page.body)];
}

async function load(root, url, signal) {
  const response = await fetch(url, { credentials: "same-origin", signal });
  const text = await response.text();
  if (response.ok) {
    show(root, reportNodes(text, url));
    return;
  }
  let detail = text;
  try {
    const parsed = JSON.parse(text).detail ?? text; // FastAPI's {"detail": …}
    detail = typeof parsed === "string" ? parsed : JSON.stringify(parsed);
  } catch {
    // not JSON: show the text as it is
  }
  show(root, [message(`forgeline report: HTTP ${response.status}: ${detail}`)]);
}

function ForgelineReport({ dagId, runId }) {
  const host = React.useRef(null);
  React.useEffect(() => {
    const root = host.current.shadowRoot ?? host.current.attachShadow({ mode: "open" });
    show(root, [message("Loading the forgeline report…")]);
    const abort = new AbortController();
    load(root, reportUrl(dagId, runId), abort.signal).catch((error) => {
      if (error.name !== "AbortError") {
        show(root, [message(`forgeline report: ${error.message}`)]);
      }
    });
    return () => abort.abort();
  }, [dagId, runId]);
  return React.createElement("div", {
    ref: host,
    "data-testid": "forgeline-report",
    style: { height: "100%", overflow: "auto" },
  });
}

globalThis.AirflowPlugin = ForgelineReport;
