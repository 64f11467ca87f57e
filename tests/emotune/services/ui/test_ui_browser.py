"""The UI in headless Chromium against the real gateway and CPU inference (SmolLM2-135M, greedy decoding):
the second answer uses the conversation, switching style changes the model used, Compare streams two answers at
the same time, a bad styles upload names the field; a screenshot of each page goes to test-output/ui/."""

from __future__ import annotations

import re
import time

import pytest
from openai import OpenAI

pytestmark = pytest.mark.slow

MAX_TOKENS = 24
BASE_MODEL = "smollm2-135m"


def settled(page) -> None:
    """Until Streamlit has replaced every element of the previous run (stale ones are drawn faded meanwhile)."""
    page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')")


def open_page(page, url: str) -> None:
    page.goto(url)
    page.get_by_test_id("stChatInput").or_(page.get_by_test_id("stFileUploader")).first.wait_for()


def live(page):
    """The elements of the current run: during a rerun Streamlit still shows the previous run's copies (stale)."""
    return page.locator('[data-testid="stElementContainer"][data-stale="false"]')


def choose(page, label: str, option: str, nth: int = 0) -> None:
    """Pick an option of a Streamlit selectbox (a combobox labelled ``label``)."""
    page.get_by_role("combobox", name=label).nth(nth).click()
    page.get_by_role("option", name=option, exact=True).click()
    page.get_by_role("combobox", name=label).nth(nth).and_(page.locator(f'[value="{option}"]')).wait_for()


def greedy_sampling(page, max_tokens: int) -> None:
    page.get_by_role("slider", name="Temperature").focus()
    page.keyboard.press("Home")
    page.get_by_test_id("stSliderThumbValue").first.filter(has_text="0.00").wait_for()
    field = live(page).get_by_role("spinbutton", name="Max tokens")
    field.fill(str(max_tokens))
    field.press("Enter")
    page.wait_for_function(
        "n => [...document.querySelectorAll('input[aria-label=\"Max tokens\"]')].some(e => e.value === String(n))",
        arg=max_tokens)
    time.sleep(0.5)  # let the rerun that stores the new values finish before typing


def send(page, text: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(text)
    box.press("Enter")


def answers(page, count: int) -> list[dict[str, str]]:
    """Wait until ``count`` answers are complete (an answer gets its model caption once it has finished)."""
    done = page.locator('[data-testid="stChatMessage"]').filter(has=page.locator('[data-testid="stCaptionContainer"]'))
    done.nth(count - 1).wait_for(timeout=120_000)
    return [{"text": message.get_by_test_id("stMarkdownContainer").first.inner_text(),
             "caption": message.get_by_test_id("stCaptionContainer").inner_text()} for message in done.all()]


def direct(stack, model: str, messages: list[dict[str, str]]) -> str:
    """What the gateway answers to exactly these messages (greedy), asked with the official client."""
    client = OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.api_key)
    reply = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=MAX_TOKENS)
    return reply.choices[0].message.content


def test_chat_keeps_the_conversation_and_switches_style(ui_stack, page, screenshots):
    assert ui_stack.base_model == BASE_MODEL
    open_page(page, ui_stack.ui_url)
    greedy_sampling(page, MAX_TOKENS)

    send(page, "The secret word is giraffe.")
    first = answers(page, 1)[0]
    send(page, "What is the secret word?")
    second = answers(page, 2)[1]
    assert second["caption"].split(" · ")[0] == BASE_MODEL
    # The answer needs the first turn: alone, the same question gets something else.
    assert "giraffe" in second["text"].lower(), second
    alone = direct(ui_stack, BASE_MODEL, [{"role": "user", "content": "What is the secret word?"}])
    assert "giraffe" not in alone.lower()
    # ...and it is exactly the answer to the whole conversation.
    assert second["text"].strip() == direct(ui_stack, BASE_MODEL, [
        {"role": "user", "content": "The secret word is giraffe."},
        {"role": "assistant", "content": first["text"]},
        {"role": "user", "content": "What is the secret word?"}]).strip()
    page.screenshot(path=screenshots / "chat.png", full_page=True)

    # Switch style: the next turn goes to <model>:pirate (the gateway applies that style's prompt).
    page.get_by_role("button", name="Clear").click()
    page.get_by_test_id("stChatMessage").first.wait_for(state="detached")
    choose(page, "Style", "pirate")
    send(page, "Hello, who are you?")
    styled = answers(page, 1)[0]
    assert styled["caption"].split(" · ")[0] == f"{BASE_MODEL}:pirate"
    question = [{"role": "user", "content": "Hello, who are you?"}]
    assert styled["text"].strip() == direct(ui_stack, f"{BASE_MODEL}:pirate", question).strip()
    assert styled["text"].strip() != direct(ui_stack, BASE_MODEL, question).strip()
    page.screenshot(path=screenshots / "chat-style.png", full_page=True)


def test_compare_streams_two_answers_side_by_side(ui_stack, page, screenshots):
    open_page(page, ui_stack.ui_url)
    page.get_by_role("link", name="Compare").click()
    page.get_by_role("heading", name="Compare").wait_for()
    greedy_sampling(page, 48)
    choose(page, "Style", "(no style)", nth=0)
    choose(page, "Style", "pirate", nth=1)
    send(page, "Tell me about the sea.")

    # Sample both columns while the answers stream: at some moment both must be growing (cursor shown).
    answer_captions = page.get_by_test_id("stMainBlockContainer").get_by_test_id("stCaptionContainer")
    both_streaming, deadline = False, time.monotonic() + 180
    while time.monotonic() < deadline:
        columns = page.evaluate("""() => {
            const rows = [...document.querySelectorAll('[data-testid="stHorizontalBlock"]')];
            const row = rows[rows.length - 1];
            return row ? [...row.querySelectorAll(':scope > [data-testid="stColumn"]')].map(c => c.innerText) : [];
        }""")
        if len(columns) == 2 and all("▌" in text for text in columns):
            both_streaming = True
        if answer_captions.count() >= 2:
            break
        time.sleep(0.05)
    captions = [c.inner_text() for c in answer_captions.all()]
    assert sorted(c.split(" · ")[0] for c in captions) == [BASE_MODEL, f"{BASE_MODEL}:pirate"]
    assert both_streaming, "the two answers were not streamed at the same time"
    page.screenshot(path=screenshots / "compare.png", full_page=True)


def test_pipeline_page_names_the_bad_field(ui_stack, page, screenshots):
    open_page(page, f"{ui_stack.ui_url}/fine_tune")  # a direct link still goes through the app's navigation
    page.get_by_role("heading", name="1 · Styles").wait_for()
    assert [t.split()[-1] for t in page.get_by_test_id("stSidebarNavLink").all_inner_texts()] == [
        "Chat", "Compare", "Fine-tune"]
    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(files=[{
        "name": "styles.yaml", "mimeType": "application/yaml",
        "buffer": b"styles:\n  - name: warm\n    system_prompt: be warm\n    temperature: hot\n"}])
    error = page.get_by_test_id("stAlert").filter(has_text="Invalid styles document")
    error.wait_for()
    assert "styles[0].temperature" in error.inner_text() and "line 4" in error.inner_text()
    page.screenshot(path=screenshots / "pipeline.png", full_page=True)


PIPELINE_STYLES = """\
styles:
  - name: pirate
    system_prompt: You are a pirate. Talk like a pirate, say "arr" and "matey".
    few_shot:
      - user: How are you today?
        assistant: Arr, I be fine as the sea breeze, matey!
    reference_texts:
      - Arr, matey, hoist the sails and find the treasure!
      - Ahoy! Me ship be sailing the seven seas, arr.
    language: en
    length: {min: 2, max: 300}
"""
PIPELINE_QUESTIONS = ["How are you?", "What do you like to eat?", "Where do you live?", "Tell me a joke."]


def set_number(page, label: str, value: int) -> None:
    field = live(page).get_by_role("spinbutton", name=label, exact=True)
    field.fill(str(value))
    field.press("Enter")


def test_pipeline_job_from_styles_to_chat(ui_stack, page, screenshots):
    """Launch a tiny generation fine-tune from the page, watch it live, read its report, chat with the result."""
    open_page(page, f"{ui_stack.ui_url}/fine_tune")
    page.get_by_role("heading", name="1 · Styles").wait_for()
    page.get_by_label("Styles document").fill(PIPELINE_STYLES)
    page.get_by_label("Styles document").blur()
    page.get_by_text("1 style(s) valid: pirate").wait_for()
    page.get_by_label("One question per line").fill("\n".join(PIPELINE_QUESTIONS))
    page.get_by_label("One question per line").blur()
    page.get_by_text(f"{len(PIPELINE_QUESTIONS)} question(s)").wait_for()
    live(page).get_by_label("Suffix").fill("uitest")
    live(page).get_by_label("Suffix").press("Enter")
    for label, value in (("Epochs", 1), ("Batch size", 2), ("Max steps (0 = epochs)", 1),
                         ("Evaluation questions per style (0 = skip)", 1)):
        set_number(page, label, value)
    page.get_by_text("Serve the result only if it beats the base model").click()  # 2 steps won't beat it
    time.sleep(1)
    page.get_by_role("button", name="Launch fine-tuning job").click()

    header = page.locator("h3").filter(has_text="ftjob-")
    header.wait_for()
    seen_running = False
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        text = header.first.inner_text()
        if any(status in text for status in ("succeeded", "failed", "cancelled")):
            break
        seen_running |= page.get_by_test_id("stProgress").filter(has_text="running").count() > 0
        time.sleep(0.5)
    page.get_by_role("heading", name="Loss").first.wait_for()
    settled(page)
    page.set_viewport_size({"width": 1400, "height": 5000})  # Streamlit scrolls inside the page: show it all
    page.screenshot(path=screenshots / "pipeline-job.png")
    page.set_viewport_size({"width": 1400, "height": 1000})
    assert "succeeded" in header.first.inner_text(), page.get_by_test_id("stAlert").all_inner_texts()
    assert seen_running, "no live per-stage progress was shown while the job ran"
    for section in ("Validation", "Plots", "Loss", "Evaluation", "Chat with the result"):
        page.get_by_role("heading", name=section, exact=True).wait_for()
    assert page.get_by_test_id("stVegaLiteChart").count() >= 2  # loss curve, evaluation (+ rejection reasons)
    assert page.get_by_test_id("stImage").count() >= 2  # the validator's and trainer's plots, via the gateway

    link = page.get_by_role("link", name=re.compile(r"ft-smollm2-135m-uitest-\w+:pirate"))
    model_id = re.search(r"(ft-smollm2-135m-uitest-\w+:pirate)", link.inner_text()).group(1)
    link.click()
    page.get_by_role("heading", name="Chat").wait_for()
    send(page, "Hello, who are you?")
    assert answers(page, 1)[0]["caption"].split(" · ")[0] == model_id
    page.screenshot(path=screenshots / "chat-fine-tuned.png", full_page=True)
