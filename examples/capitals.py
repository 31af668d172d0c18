"""An example plugin task: load it with `llama-eval run --include examples/capitals.py --tasks capitals`.

Dataset: five questions written inline (a real task would read a file under data_dir).
Shots: zero. Prompt: "Q: What is the capital of {country}?\\nA:", choices " {city}".
Scoring: log-likelihood per character of the choice, the paper's default rule.
"""

from llama_eval.tasks.base import MultipleChoiceTask

QUESTIONS = [
    ("France", ["Paris", "Lyon", "Nice"], 0),
    ("Japan", ["Osaka", "Tokyo", "Kyoto"], 1),
    ("Canada", ["Toronto", "Vancouver", "Ottawa"], 2),
    ("Australia", ["Canberra", "Sydney", "Perth"], 0),
    ("Italy", ["Milan", "Rome", "Turin"], 1),
]


class Capitals(MultipleChoiceTask):
    name = "capitals"
    paper_name = "Capitals"  # not in the paper: the summary leaves paper_value empty
    scoring = "chars"

    def load(self, data_dir):
        return [{"id": country, "country": country, "cities": cities, "gold": gold}
                for country, cities, gold in QUESTIONS]

    def context(self, doc, shots):
        return f"Q: What is the capital of {doc['country']}?\nA:"

    def choices(self, doc):
        return [" " + city for city in doc["cities"]]

    def gold(self, doc):
        return doc["gold"]
