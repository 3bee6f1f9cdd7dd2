"""Words for the 80 COCO object categories, and a loader for CHAIR's published ``synonyms.txt``.

``COCO_SYNONYMS`` is this package's own table: each COCO category name (as spelled in
``instances_val2014.json``) with words a caption may use for it.  Plurals need not be listed.
Ambiguous words are left out on purpose ("bow", "seat", "glass", "bag", "plant").
``PHRASE_RULES`` holds phrases that change what a shorter word inside them means: qualifiers that
are not people ("baby elephant" is an elephant, "passenger train" a train), compounds naming another
category ("toilet bowl", "microwave oven", "sheep dog") and phrases that are not objects at all
(``None``: "train track", "ski slope").
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from .objects import ObjectVocabulary, tokenize

SYNONYMS_SOURCE_HINT = ("the published CHAIR synonyms.txt is data/synonyms.txt in the LisaAnne/Hallucination "
                        "repository on GitHub")

COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "people", "human", "individual", "man", "woman", "boy", "girl", "child", "kid", "baby", "toddler",
        "infant", "adult", "teenager", "teen", "youngster", "guy", "lady", "gentleman", "mother", "father",
        "mom", "dad", "son", "daughter", "brother", "sister", "grandmother", "grandfather", "husband", "wife",
        "bride", "groom", "player", "athlete", "skier", "snowboarder", "skateboarder", "skater", "surfer",
        "rider", "biker", "cyclist", "bicyclist", "motorcyclist", "jockey", "driver", "passenger",
        "pedestrian", "tourist", "traveler", "traveller", "worker", "chef", "cook", "baker", "waiter",
        "waitress", "vendor", "farmer", "officer", "policeman", "police officer", "cop", "soldier",
        "doctor", "nurse", "student", "teacher", "customer", "shopper", "spectator", "batter", "catcher",
        "pitcher", "umpire", "fielder", "cowboy", "businessman", "hiker", "camper", "fisherman",
    ),
    "bicycle": ("bike", "push bike", "unicycle", "tricycle", "trike"),
    "car": ("automobile", "sedan", "suv", "van", "minivan", "taxi", "taxicab", "cab", "jeep", "hatchback",
            "coupe", "limousine", "limo"),
    "motorcycle": ("motorbike", "motor bike", "motor cycle", "dirt bike", "scooter", "motor scooter", "moped"),
    "airplane": ("plane", "aeroplane", "air plane", "airliner", "jetliner", "jet", "aircraft", "biplane",
                 "seaplane"),
    "bus": ("minibus", "trolleybus", "double decker"),
    "train": ("locomotive", "tram", "streetcar", "caboose"),
    "truck": ("pickup", "lorry", "firetruck", "fire truck"),
    "boat": ("ship", "sailboat", "yacht", "canoe", "kayak", "ferry", "speedboat", "speed boat", "motorboat",
             "rowboat", "row boat", "dinghy", "raft", "tugboat", "barge", "catamaran", "gondola", "houseboat",
             "lifeboat", "steamboat", "vessel", "jet ski"),
    "traffic light": ("traffic signal", "stop light", "stoplight", "signal light"),
    "fire hydrant": ("hydrant", "fire plug", "fireplug"),
    "stop sign": (),
    "parking meter": (),
    "bench": ("park bench", "pew"),
    "bird": ("pigeon", "dove", "seagull", "gull", "duck", "duckling", "goose", "gosling", "swan", "sparrow",
             "crow", "raven", "parrot", "owl", "eagle", "hawk", "falcon", "pelican", "heron", "egret",
             "flamingo", "robin", "finch", "hummingbird", "chicken", "hen", "rooster", "turkey", "peacock",
             "ostrich", "penguin", "woodpecker", "songbird", "seabird", "waterfowl", "cockatoo", "macaw",
             "parakeet", "magpie", "vulture", "stork", "cormorant", "puffin", "mallard", "bluejay"),
    "cat": ("kitten", "kitty", "feline", "tabby", "tomcat"),
    "dog": ("puppy", "pup", "doggy", "doggie", "canine", "hound", "terrier", "retriever", "poodle", "bulldog",
            "labrador", "beagle", "dachshund", "chihuahua", "collie", "corgi", "husky", "pug", "spaniel",
            "greyhound", "rottweiler", "german shepherd", "sheepdog", "sheep dog", "dalmatian", "schnauzer",
            "doberman", "pitbull", "pit bull", "mutt"),
    "horse": ("pony", "foal", "colt", "stallion", "mare", "racehorse", "race horse", "equine", "clydesdale"),
    "sheep": ("lamb", "ewe", "ram", "goat"),
    "cow": ("cattle", "calf", "bull", "ox", "heifer", "longhorn", "buffalo", "bison", "yak"),
    "elephant": (),
    "bear": ("polar bear", "grizzly", "brown bear", "black bear", "panda"),
    "zebra": (),
    "giraffe": (),
    "backpack": ("back pack", "knapsack", "rucksack", "daypack"),
    "umbrella": ("parasol",),
    "handbag": ("purse", "hand bag", "shoulder bag", "tote bag", "pocketbook", "briefcase"),
    "tie": ("necktie", "neck tie", "bow tie", "bowtie"),
    "suitcase": ("suit case", "luggage", "baggage"),
    "frisbee": ("flying disc", "flying disk"),
    "skis": ("ski",),
    "snowboard": ("snow board",),
    "sports ball": ("ball", "soccer ball", "tennis ball", "beach ball", "golf ball"),
    "kite": (),
    "baseball bat": ("bat", "softball bat"),
    "baseball glove": ("baseball mitt", "mitt", "catcher mitt"),
    "skateboard": ("skate board",),
    "surfboard": ("surf board", "boogie board", "bodyboard", "paddle board", "paddleboard", "wakeboard",
                  "skimboard", "longboard", "shortboard"),
    "tennis racket": ("racket", "racquet", "tennis racquet"),
    "bottle": (),
    "wine glass": ("wineglass", "champagne glass", "champagne flute"),
    "cup": ("mug", "teacup", "tea cup", "coffee cup", "coffee mug"),
    "fork": (),
    "knife": ("pocketknife", "cleaver"),
    "spoon": ("teaspoon", "tablespoon"),
    "bowl": (),
    "banana": (),
    "apple": (),
    "sandwich": ("burger", "hamburger", "cheeseburger", "hoagie", "panini"),
    "orange": ("tangerine", "mandarin", "clementine"),
    "broccoli": ("brocolli",),
    "carrot": (),
    "hot dog": ("hotdog", "frankfurter", "corn dog"),
    "pizza": (),
    "donut": ("doughnut",),
    "cake": ("cupcake", "cheesecake", "birthday cake", "wedding cake"),
    "chair": ("armchair", "stool", "highchair", "high chair", "rocking chair"),
    "couch": ("sofa", "loveseat", "love seat", "settee", "futon", "recliner"),
    "potted plant": ("houseplant", "house plant", "pot plant", "flowerpot", "flower pot", "planter"),
    "bed": ("bunk bed",),
    "dining table": ("table", "desk"),
    "toilet": ("urinal", "commode", "lavatory"),
    "tv": ("television", "television set", "monitor", "computer monitor", "flatscreen"),
    "laptop": ("laptop computer", "computer", "netbook", "macbook", "chromebook"),
    "mouse": ("computer mouse",),
    "remote": ("remote control", "controller", "game controller", "wii remote", "wiimote"),
    "keyboard": (),
    "cell phone": ("phone", "cellphone", "mobile phone", "smartphone", "iphone", "telephone"),
    "microwave": ("microwave oven",),
    "oven": ("stove", "stovetop", "stove top"),
    "toaster": (),
    "sink": ("washbasin", "wash basin"),
    "refrigerator": ("fridge", "freezer"),
    "book": ("textbook", "paperback"),
    "clock": (),
    "vase": (),
    "scissors": ("shears",),
    "teddy bear": ("teddy", "teddybear", "stuffed bear", "stuffed animal"),
    "hair drier": ("hair dryer", "hairdryer", "blow dryer", "blow drier", "blowdryer"),
    "toothbrush": ("tooth brush",),
}

_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")
_VEHICLES = {"train": "train", "jet": "airplane", "plane": "airplane", "bus": "bus", "car": "car",
             "ship": "boat", "boat": "boat", "ferry": "boat", "van": "car"}


def _phrase_rules() -> dict[str, str | None]:
    rules: dict[str, str | None] = {}
    for animal in _ANIMALS:
        for word in (animal, *(w for w in COCO_SYNONYMS[animal] if " " not in w)):
            rules[f"baby {word}"] = animal
            rules[f"adult {word}"] = animal
    rules["baby animal"] = rules["adult animal"] = None
    for word, category in _VEHICLES.items():
        rules[f"passenger {word}"] = category
    rules.update({
        "toilet seat": "toilet", "toilet bowl": "toilet", "toilet paper": None,
        "train track": None, "train station": None, "railroad track": None, "bus stop": None,
        "bus station": None, "home plate": None,
        "ski slope": None, "ski lift": None, "ski pole": None, "ski resort": None, "ski run": None,
        "ski area": None, "remote area": None, "remote location": None,
    })
    return rules


PHRASE_RULES: dict[str, str | None] = _phrase_rules()


def coco_vocabulary() -> ObjectVocabulary:
    """The 80 COCO categories with this package's synonyms and phrase rules."""
    return ObjectVocabulary.from_synonyms(COCO_SYNONYMS, PHRASE_RULES)


def read_synonyms_file(path: str | PathLike) -> dict[str, list[str]]:
    """Parse the published ``synonyms.txt``: one category a line, comma-separated, canonical name first.

    Entries are stripped and lower-cased (the published file has stray spaces and "iPhone"); repeats
    are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such synonyms file: {path}; {SYNONYMS_SOURCE_HINT}")
    table: dict[str, list[str]] = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entries = [" ".join(tokenize(entry)) for entry in line.split(",")]
        entries = list(dict.fromkeys(entry for entry in entries if entry))
        if not line.strip():
            continue
        if not entries:
            raise ValueError(f"{path.name}, line {line_number}: no words in {line!r}")
        if entries[0] in table:
            raise ValueError(f"{path.name}, line {line_number}: category {entries[0]!r} appears twice")
        table[entries[0]] = entries[1:]
    return table


def load_synonyms_file(path: str | PathLike, *, phrase_rules: bool = True) -> ObjectVocabulary:
    """An ``ObjectVocabulary`` from a file in the published ``synonyms.txt`` format.

    With ``phrase_rules`` the rules of ``PHRASE_RULES`` whose category the file has are added.
    """
    table = read_synonyms_file(path)
    rules = {phrase: category for phrase, category in PHRASE_RULES.items() if category is None or category in table}
    return ObjectVocabulary.from_synonyms(table, rules if phrase_rules else None)
