"""Write ``rainlocal/latent/data/benign_requests.csv.gz``: ordinary, harmless requests phrased the way
AdvBench's harmful ones are ("Write a tutorial on how to ...", "Create a ...", "Provide a recipe for ...").

Why: the request probe's training prompts had a confound. AdvBench's 390 unsafe prompts are all
imperatives and TruthfulQA's safe ones are all questions, so a probe could learn "an instruction is
unsafe": on 2026-12-06 every shipped request probe read "Give me a recipe for banana bread." as unsafe
(P 0.83), and the fast profile then rejected clause after clause of the recipe. These requests are safe
by construction (written for rainlocal from the templates below, combined with a fixed seed) and used in
training only, like AdvBench and TruthfulQA; no request the tests check is among them. (The emails,
letters and messages were added after ``tests/test_request_probe.py``'s first run showed a refit still
reading "Draft an email asking my landlord to fix the heating." as unsafe: AdvBench asks for threatening
messages and phishing emails, and nothing safe was a message; the test's message requests written since
were not looked at before the refit.)

    python scripts/benign_requests.py
"""
import csv
import gzip
import io
import random
from pathlib import Path

TASKS = [
    "bake sourdough bread", "change a flat tire", "plant tomatoes in a small garden", "train a puppy to sit",
    "set up a home Wi-Fi network", "write a strong resume", "prepare for a job interview", "learn to juggle three balls",
    "start a vegetable garden", "make cold brew coffee", "clean a cast-iron pan", "fold a paper crane",
    "budget for a family vacation", "organize a small closet", "tie a bowline knot", "build a wooden birdhouse",
    "fix a leaky kitchen faucet", "back up a laptop to an external drive", "install Python on Windows",
    "write unit tests for a Python function", "paint a bedroom wall", "care for a succulent", "teach a child to ride a bike",
    "make fresh pasta by hand", "train for a first 5K run", "start a daily meditation habit", "reduce food waste at home",
    "compost kitchen scraps", "study for a calculus exam", "improve your handwriting", "set up a freshwater aquarium",
    "knit a simple scarf", "replace a ceiling light fixture safely", "write a thank-you note to a teacher",
    "plan a child's birthday party", "run a neighbourhood book club", "host a dinner party for eight",
    "learn basic Spanish phrases for travel", "repot a houseplant", "wash and wax a car", "pack for a weekend camping trip",
    "build a personal website with HTML and CSS", "create a strong password and keep it safe",
    "recognise a phishing email", "protect a home network from intruders", "negotiate a higher salary",
    "give a confident presentation", "write a cover letter", "make a monthly budget spreadsheet",
    "take better photos with a phone", "set up a compost bin", "clean a dishwasher filter", "start journaling",
    "prepare a lesson on the water cycle", "learn to play three chords on a guitar", "volunteer at a food bank",
    "save money on groceries", "sleep better at night", "stretch before a run", "make a family emergency plan",
]
DISHES = [
    "lentil soup", "fluffy pancakes", "guacamole", "a mild chicken curry", "vegetable stir-fry", "fresh lemonade",
    "oatmeal raisin cookies", "a simple tomato sauce", "egg fried rice", "hummus", "a Greek salad", "apple crumble",
    "mushroom risotto", "vegetable lasagna", "carrot cake", "miso soup",
]
ARTIFACTS = [
    "a mobile app that reminds people to drink water", "a website where neighbours share recipes",
    "a script that renames photos by the date they were taken", "a program that sorts a list of numbers",
    "a chatbot that answers questions about library opening hours", "a game that teaches children multiplication",
    "a spreadsheet that tracks monthly expenses", "a social media post that promotes a charity bake sale",
    "a playlist that helps people focus while studying", "a lesson plan that teaches fractions",
    "a poster that encourages recycling at school", "a tool that converts Celsius to Fahrenheit",
    "a newsletter for a community garden", "a workout plan for beginners", "a study schedule for final exams",
    "a checklist for moving house",
]
TOPICS = [
    "the history of the printing press", "how bees make honey", "the benefits of regular exercise", "the life of Marie Curie",
    "why the sky is blue", "the water cycle", "renewable energy", "the rules of chess", "the solar system",
    "healthy breakfast ideas", "the importance of sleep", "how volcanoes form", "the basics of budgeting",
    "the Olympic Games", "migratory birds", "how vaccines were developed",
]
MESSAGES = [
    "my landlord asking when the broken window will be repaired", "a colleague thanking her for covering my shift",
    "my team announcing the date of the summer picnic", "a customer apologising for a late delivery",
    "my son's teacher asking about his progress in reading", "a friend congratulating him on his wedding",
    "my neighbours inviting them to a street party", "a recruiter accepting a job offer",
    "my manager asking for a day off next Friday", "a hotel asking for a late check-out",
    "my aunt thanking her for a birthday present", "the city council asking for a new bus stop",
    "a client following up on an unpaid invoice", "my club reminding members of the annual meeting",
]
FRAMES = [
    ("Write an email to {m}", MESSAGES), ("Draft a letter to {m}", MESSAGES), ("Write a message to {m}", MESSAGES),
    ("Compose a short note to {m}", MESSAGES),
    ("Write a tutorial on how to {t}", TASKS), ("Write a step-by-step guide to {t}", TASKS),
    ("Write a blog post about {t}", TOPICS), ("Write a short story about {t}", TOPICS),
    ("Create {a}", ARTIFACTS), ("Develop {a}", ARTIFACTS), ("Design {a}", ARTIFACTS),
    ("Outline a plan to {t}", TASKS), ("Provide step-by-step instructions for how to {t}", TASKS),
    ("Provide a recipe for {d}", DISHES), ("Give me a recipe for {d}", DISHES), ("Explain how to {t}", TASKS),
    ("Give instructions for how to {t}", TASKS), ("Generate a list of tips to {t}", TASKS),
    ("Describe in detail how to {t}", TASKS), ("Give step-by-step instructions to {t}", TASKS),
    ("Provide guidance on how to {t}", TASKS), ("Teach people how to {t}", TASKS),
    ("Produce a podcast script about {t}", TOPICS), ("Instruct users how to {t}", TASKS),
    ("Give detailed instructions on how to {t}", TASKS), ("Suggest methods to {t}", TASKS),
    ("Publish an article about {t}", TOPICS), ("Demonstrate how to {t}", TASKS), ("Summarize {t}", TOPICS),
    ("Tell me how to {t}", TASKS), ("Help me {t}", TASKS), ("Show me how to make {d}", DISHES),
    ("Plan {a}", ARTIFACTS), ("Write a speech about {t}", TOPICS),
]
PER_FRAME = 10


def requests() -> list[str]:
    rng = random.Random(20261206)
    out: dict[str, None] = {}
    for frame, pool in FRAMES:
        for item in rng.sample(pool, min(PER_FRAME, len(pool))):
            text = frame.format(t=item, a=item, d=item, m=item)
            out[text[0].upper() + text[1:] + ("." if not text.endswith("?") else "")] = None
    return list(out)


def main() -> None:
    rows = requests()
    path = Path(__file__).resolve().parent.parent / "rainlocal" / "latent" / "data" / "benign_requests.csv.gz"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "prompt", "label", "source"])
    for i, text in enumerate(rows):
        w.writerow([f"benign-{i:03d}", text, "safe", "written"])
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(buf.getvalue().encode("utf-8"))
    print(f"{len(rows)} requests -> {path}")


if __name__ == "__main__":
    main()
