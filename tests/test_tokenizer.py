from transformers import CLIPTokenizer

from dream3d.diffusion.build import DEFAULT_WORDS
from dream3d.diffusion.tokenizer import build_word_tokenizer, save_tokenizer


def test_every_listed_word_is_one_token_and_build_is_deterministic():
    a = build_word_tokenizer(DEFAULT_WORDS)
    b = build_word_tokenizer(reversed(DEFAULT_WORDS))
    assert a.get_vocab() == b.get_vocab()
    for word in DEFAULT_WORDS:
        if word.isalpha():
            assert a.tokenize(word) == [word + "</w>"], word
    ids = a("a Purple torus, overhead view", padding="max_length", max_length=16).input_ids
    assert a.convert_ids_to_tokens(ids[:7]) == [
        "<|startoftext|>",
        "a</w>",
        "purple</w>",
        "torus</w>",
        ",</w>",
        "overhead</w>",
        "view</w>",
    ]
    assert len(ids) == 16


def test_unknown_words_still_tokenize_and_round_trip_through_files(tmp_path):
    tok = build_word_tokenizer(["red", "green"])
    pieces = tok.tokenize("zebra greenish")
    assert "".join(p.replace("</w>", " ") for p in pieces).split() == ["zebra", "greenish"]
    assert tok.unk_token_id not in tok.convert_tokens_to_ids(pieces)
    save_tokenizer(tok, tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again("a red zebra").input_ids == tok("a red zebra").input_ids
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "merges.txt").is_file()
