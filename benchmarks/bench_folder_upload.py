"""One document added through the page to a large folder: how soon it answers, and whether the rest stays as fast.

    rag bench folder-upload                                  # markdown table, the default local model
    rag bench folder-upload --generator extractive --json    # one JSON object

What a new user does in the browser: `rag serve` on the folder of `rag bench folder` (all 646
SQuAD 2.0 paragraphs as files, indexed; built first if the index is missing), without the watcher
(RAG_WATCH=false: the page's upload indexes by itself), the page opened in headless Chromium
(Debian's, through Playwright), and in one chat:

1. a question about the folder (SQuAD's report half, as `rag bench folder` samples them), asked
   with everything loaded: the warm baseline;
2. one new text document (a made-up ~150-word paragraph with one fact no other file has) added
   through the Documents panel; "upload finished" is the moment its row shows "indexed";
3. at once, the question only that document answers: seconds from upload finished to the
   answer's first words and to the whole answer, whether it states the fact and cites the file;
4. the other folder questions: first words and whole answer from Enter, to compare with 1.

Then the document is removed through the page's remove button (or, should that fail, deleted and
`rag index` run), so the folder is as before, and the server stopped. The page is read at each
change of its DOM (a MutationObserver, on the page's clock). Do not run it while another
benchmark uses the same folder: it adds a file to it and rebuilds its index twice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_first_question import CHROMIUM, CHROMIUM_ARGS, Server, rag_command, server_env
from benchmarks.bench_folder import contained, folder_settings, questions
from benchmarks.common import log, machine

DOCUMENT_NAME = "vellmar_observatory.txt"
DOCUMENT = (
    "The Vellmar Observatory\n\n"
    "The Vellmar Observatory stands on a granite ridge above the town of Oberhalden, about 900 metres "
    "above sea level. It was founded in 1893 by the astronomer Ilse Korbach, who paid for the first dome "
    "with the inheritance from her father's weaving mill and ran the observatory for thirty-one years. "
    "Korbach's main instrument was a 40-centimetre refracting telescope built in Munich, with which she "
    "and two assistants catalogued more than 2,400 variable stars. The observatory's archive still holds "
    "her glass photographic plates, about 11,000 of them, kept in oak cabinets in the cellar. In 1958 the "
    "University of Halden took over the buildings and added a radio dish on the eastern slope. Today the "
    "Vellmar Observatory is used mainly for teaching: students from the university spend a week there "
    "each winter, and on clear Friday evenings the old refractor is opened to visitors from the town.\n"
)
DOCUMENT_QUESTION = "Who founded the Vellmar Observatory?"
DOCUMENT_FACT = "Ilse Korbach"
DONE_STATES = ("indexed", "skipped", "refused", "failed", "removed")

# Installed once in the page: every change of the newest upload/remove row's state for one file,
# and, per question, the Enter keypress and every change of what its answer bubble shows.
WATCH_JS = """
(doc) => {
  const W = window.__folderUpload = {rows: [], question: null};
  const rowState = () => {
    for (const row of document.querySelectorAll('#documents-progress .rag-doc-row')) {
      const name = row.querySelector('.rag-doc-name');
      if (name && name.textContent === doc) return row.dataset.state;
    }
    return null;
  };
  const shown = (q) => {
    const bots = document.querySelectorAll('#chat [data-testid="bot"]');
    const last = bots.length > q.bots ? bots[bots.length - 1] : null;
    if (!last || !last.innerText.trim()) return {kind: 'nothing', text: ''};
    if (last.querySelector('.rag-final')) return {kind: 'final', text: last.innerText};
    if (last.querySelector('.rag-cursor')) return {kind: 'words', text: last.innerText.replace('▍', '').trim()};
    if (last.querySelector('.rag-thinking')) return {kind: 'note', text: last.innerText.trim()};
    return {kind: 'other', text: last.innerText};
  };
  const sample = () => {
    const state = rowState(), prev = W.rows[W.rows.length - 1];
    if (state && (!prev || prev.state !== state)) W.rows.push({t: Date.now(), state});
    const q = W.question;
    if (!q || q.enter === null) return;
    const now = shown(q), last = q.samples[q.samples.length - 1];
    if (!last || last.kind !== now.kind || last.text !== now.text) q.samples.push({t: Date.now(), ...now});
  };
  document.addEventListener('keydown', (e) => {
    const q = W.question;
    if (e.key === 'Enter' && !e.shiftKey && q && q.enter === null && e.target.closest('#question')) {
      q.enter = Date.now();
    }
  }, true);
  new MutationObserver(sample).observe(document.body,
                                       {subtree: true, childList: true, characterData: true, attributes: true});
  setInterval(sample, 100);
}
"""


def seconds(later: float | None, earlier: float) -> float | None:
    return None if later is None else round((later - earlier) / 1000, 2)


def first_seen(samples: list[dict], kinds: tuple[str, ...]) -> float | None:
    """Page time the answer's bubble first showed one of `kinds` (words: non-empty)."""
    hit = next((s for s in samples if s["kind"] in kinds and (s["kind"] != "words" or s["text"])), None)
    return hit["t"] if hit else None


def ask(page, question: str, timeout_s: float) -> dict:
    """Type the question, press Enter, wait for the whole answer; what the page showed and when."""
    page.evaluate("() => { const W = window.__folderUpload; "
                  "W.question = {enter: null, bots: document.querySelectorAll('#chat [data-testid=\"bot\"]').length, "
                  "samples: []}; }")
    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter")
    page.wait_for_function("() => window.__folderUpload.question.samples.some(s => s.kind === 'final')",
                           timeout=timeout_s * 1000)
    seen = page.evaluate("() => window.__folderUpload.question")
    bubble = page.locator("#chat .rag-final").last.locator("xpath=..")
    standalone = bubble.locator(".rag-standalone")
    return {
        "question": question,
        "enter": seen["enter"],
        "first_words": first_seen(seen["samples"], ("words", "final")),
        "whole_answer": first_seen(seen["samples"], ("final",)),
        "word_updates": sum(s["kind"] == "words" for s in seen["samples"]),
        "answer": bubble.locator(".rag-final").last.inner_text(),
        "refused": bubble.locator(".rag-refusal").count() > 0,
        "sources": [s.inner_text() for s in bubble.locator(".rag-src").all()],
        "searched_for": standalone.inner_text() if standalone.count() else None,
    }


def folder_row(shown: dict, item) -> dict:
    """A folder question's figures from its Enter keypress."""
    return {"id": item.id, "question": item.question,
            "first_words_s": seconds(shown["first_words"], shown["enter"]),
            "whole_answer_s": seconds(shown["whole_answer"], shown["enter"]),
            "contained": contained(shown["answer"], item.answers), "refused": shown["refused"],
            "gold_cited": any(s in src for s in item.sources for src in shown["sources"]),
            "searched_for": shown["searched_for"], "answer": shown["answer"][:200]}


def wait_row(page, states: tuple[str, ...], since: int, timeout_s: float) -> dict:
    """The first row state in `states` recorded after position `since` of the row timeline."""
    page.wait_for_function(
        "([since, states]) => window.__folderUpload.rows.slice(since).some(r => states.includes(r.state))",
        arg=[since, list(states)], timeout=timeout_s * 1000)
    rows = page.evaluate("() => window.__folderUpload.rows")[since:]
    return next(r for r in rows if r["state"] in states)


def upload(page, path: Path, timeout_s: float) -> dict:
    """Add the file through the Documents panel; page times of the start and of its final state."""
    since = len(page.evaluate("() => window.__folderUpload.rows"))
    started = page.evaluate("() => Date.now()")
    page.locator("#doc-upload input[type=file]").set_input_files([str(path)])
    done = wait_row(page, DONE_STATES, since, timeout_s)
    rows = page.evaluate("() => window.__folderUpload.rows")[since:]
    return {"started": started, "done": done["t"], "state": done["state"],
            "timeline": [{"at_s": seconds(r["t"], started), "state": r["state"]} for r in rows]}


def remove(page, name: str, timeout_s: float) -> dict:
    """Remove the document with its button in the Documents list, confirmed; seconds and state."""
    since = len(page.evaluate("() => window.__folderUpload.rows"))
    page.locator(f'#documents-list .rag-doc-row[data-doc="{name}"] [data-remove]').click()
    page.locator("#remove-prompt", has_text=name).wait_for(timeout=30_000)
    started = page.evaluate("() => Date.now()")
    page.locator("#remove-yes").click()
    done = wait_row(page, ("removed", "failed"), since, timeout_s)
    return {"seconds": seconds(done["t"], started), "state": done["state"]}


def indexed_sources(env: dict[str, str]) -> set[str] | None:
    """The documents of the index in use of the folder `env` names (None: no index yet)."""
    from rag.config import Settings
    from rag.errors import IndexNotFoundError
    from rag.index_handle import index_status

    settings = Settings(_env_file=None, seeds_dir=env["RAG_SEEDS_DIR"], index_dir=env["RAG_INDEX_DIR"])
    try:
        return set(index_status(settings).sources)
    except IndexNotFoundError:
        return None


def seed_names(seeds: Path) -> set[str]:
    return {p.name for p in seeds.iterdir() if p.is_file() and not p.name.startswith(".")}


def prepare(work: Path) -> None:
    """The folder's files written (a leftover added document removed) and its index up to date."""
    from rag.pipeline import Rag

    settings = folder_settings(work)  # writes the corpus; other .txt files in the folder are pruned
    indexed = indexed_sources({"RAG_SEEDS_DIR": str(settings.seeds_dir), "RAG_INDEX_DIR": str(settings.index_dir)})
    if indexed != seed_names(Path(settings.seeds_dir)):
        log("indexing the folder (missing or out of date)")
        rag = Rag(settings)
        try:
            rag.index(progress=True)
        finally:
            rag.close()


def restore(work: Path, env: dict[str, str], chats_before: set[str]) -> dict:
    """After the server stopped: the added document gone from the folder and its index, and the
    chat file gone if the run created it. Whether the folder is as before."""
    added = work / "seeds" / DOCUMENT_NAME
    reindexed = False
    if added.exists() or DOCUMENT_NAME in (indexed_sources(env) or set()):
        added.unlink(missing_ok=True)
        log(f"removing {DOCUMENT_NAME} with `rag index`")
        subprocess.run([*rag_command(), "index"], cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
        reindexed = True
    for path in (work / "index").glob("chats.sqlite3*"):
        if path.name not in chats_before:
            path.unlink(missing_ok=True)
    return {"reindexed_after": reindexed,
            "folder_as_before": indexed_sources(env) == seed_names(work / "seeds") and not added.exists()}


def run(args: argparse.Namespace, work: Path) -> dict:
    from playwright.sync_api import sync_playwright

    items = questions(args.questions, args.seed)
    if not items:
        raise SystemExit("no folder questions: --questions must be at least 1")
    env = server_env(work, [f"RAG_GENERATOR={args.generator}", "RAG_WATCH=false", *args.env])
    chats_before = {p.name for p in (work / "index").glob("chats.sqlite3*")}
    documents = len(seed_names(work / "seeds"))
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="rag-folder-upload-") as tmp, sync_playwright() as playwright:
        path = Path(tmp) / DOCUMENT_NAME
        path.write_text(DOCUMENT, encoding="utf-8")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        server = Server(work, env, traced=False)
        try:
            result["server_ready_s"] = round(server.wait_ready(args.start_timeout), 1)
            log(f"server ready after {result['server_ready_s']} s on {server.url}")
            context = browser.new_context(viewport={"width": 1360, "height": 1000})
            page = context.new_page()
            page.goto(server.url)
            page.wait_for_selector("#question textarea")
            page.locator("#documents-list .rag-doc-count").wait_for(timeout=60_000)
            page.evaluate(WATCH_JS, DOCUMENT_NAME)

            log(f"before the upload: {items[0].question}")
            before = folder_row(ask(page, items[0].question, args.answer_timeout), items[0])
            log(f"uploading {DOCUMENT_NAME}")
            added = upload(page, path, args.upload_timeout)
            if added["state"] != "indexed":
                raise SystemExit(f"{DOCUMENT_NAME} was {added['state']}, not indexed; see {server.log_path}")
            log(f"indexed after {seconds(added['done'], added['started'])} s; asking about it")
            shown = ask(page, DOCUMENT_QUESTION, args.answer_timeout)
            new_document = {
                "question": DOCUMENT_QUESTION,
                "upload_to_indexed_s": seconds(added["done"], added["started"]),
                "enter_after_indexed_s": seconds(shown["enter"], added["done"]),
                "first_words_s": seconds(shown["first_words"], added["done"]),
                "whole_answer_s": seconds(shown["whole_answer"], added["done"]),
                "first_words_from_enter_s": seconds(shown["first_words"], shown["enter"]),
                "whole_answer_from_enter_s": seconds(shown["whole_answer"], shown["enter"]),
                "fact_stated": DOCUMENT_FACT.lower() in shown["answer"].lower(),
                "cites_document": any(DOCUMENT_NAME in s for s in shown["sources"]),
                "refused": shown["refused"], "searched_for": shown["searched_for"],
                "answer": shown["answer"], "sources": shown["sources"],
                "upload_timeline": added["timeline"],
            }
            after = []
            for item in items[1:]:
                log(f"after the upload: {item.question}")
                after.append(folder_row(ask(page, item.question, args.answer_timeout), item))
            log(f"removing {DOCUMENT_NAME} through the page")
            try:
                removal = remove(page, DOCUMENT_NAME, args.upload_timeout)
            except Exception as exc:  # noqa: BLE001 - the folder is put back after the server stops
                removal = {"seconds": None, "state": f"not through the page: {exc.__class__.__name__}"}
            context.close()
            result.update(before_upload=before, new_document=new_document, after_upload=after, removal=removal)
        finally:
            server.stop()
            browser.close()
            result["restore"] = restore(work, env, chats_before)
    result["documents_before_upload"] = documents
    return result


def answered(row: dict) -> str:
    return "refused" if row["refused"] else str(row["contained"])


def print_markdown(report: dict) -> None:
    new = report["new_document"]
    print(f"One document added through the page to a folder of {report['documents_before_upload']} files "
          f"({report['generator']}); server ready after {report['server_ready_s']} s.\n")
    print(f"Upload to indexed: {new['upload_to_indexed_s']} s; the question was sent "
          f"{new['enter_after_indexed_s']} s after.\n")
    print("| question | timed from | first words | whole answer | states the answer | cites its file |")
    print("|---|---|---|---|---|---|")
    b = report["before_upload"]
    print(f"| {b['question']} (before the upload) | Enter | {b['first_words_s']} s | {b['whole_answer_s']} s | "
          f"{answered(b)} | {b['gold_cited']} |")
    stated = answered({**new, "contained": new["fact_stated"]})
    print(f"| {new['question']} (the new document) | upload finished | {new['first_words_s']} s | "
          f"{new['whole_answer_s']} s | {stated} | {new['cites_document']} |")
    print(f"| ↳ the same | Enter | {new['first_words_from_enter_s']} s | {new['whole_answer_from_enter_s']} s | | |")
    for a in report["after_upload"]:
        print(f"| {a['question']} (after) | Enter | {a['first_words_s']} s | {a['whole_answer_s']} s | "
              f"{answered(a)} | {a['gold_cited']} |")
    print(f"\nAnswer about the new document: {new['answer']!r}")
    print(f"Sources: {'; '.join(new['sources']) or 'none'}")
    removal, restored = report["removal"], report["restore"]
    print(f"\nRemoved through the page: {removal['state']} ({removal['seconds']} s); folder as before: "
          f"{restored['folder_as_before']}" + (" (after `rag index`)" if restored["reindexed_after"] else ""))
    print(f"\nMachine: {report['machine']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a markdown table")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder with seeds/ and index/ (default: the cache folder of `rag bench folder`)")
    parser.add_argument("--generator", default="llamacpp", help="RAG_GENERATOR of the server (default: llamacpp)")
    parser.add_argument("--questions", type=int, default=3,
                        help="folder questions: the first asked before the upload, the others after")
    parser.add_argument("--seed", type=int, default=11, help="the sample of folder questions (as `rag bench folder`)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="another setting for `rag serve`, e.g. RAG_PROMPT_CONTEXT=windowed (repeatable)")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--answer-timeout", type=float, default=300.0)
    parser.add_argument("--upload-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        raise SystemExit(f"needs Debian's chromium at {CHROMIUM} (`make test` installs it)")

    from rag.evaluation.corpus import cache_root

    work = (args.work or cache_root() / "bench-folder-squad2").resolve()
    prepare(work)
    report = {"work": str(work), "generator": args.generator, "settings": args.env, **run(args, work),
              "machine": machine()}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_markdown(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
