# ruff: noqa: RUF001 - look-alike letters are what these tests feed in
"""normalize(): what the safety filter reads, and the way back to the original text."""

from __future__ import annotations

import pytest

from generation.safety.normalize import normalize, without_invisibles


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello World", "hello world"),
        # case, NFKC-style compatibility forms
        ("ＦＵＣＫ you", "fuck you"),  # fullwidth
        ("𝐟𝐮𝐜𝐤 𝖞𝖔𝖚", "fuck you"),  # mathematical bold, fraktur
        ("ⓕⓤⓒⓚ", "fuck"),  # circled
        ("🅵🆄🅲🅺", "fuck"),  # negative squared: no decomposition, mapped by range
        ("🇫🇺🇨🇰", "fuck"),  # regional indicators
        ("ﬁne", "fine"),  # ligature
        # accents and other combining marks
        ("Fück", "fuck"),
        ("e\u0301cole", "ecole"),
        ("f\u0336u\u0336c\u0336k\u0336", "fuck"),  # strike-through overlay
        ("z̷̢a̵l̸g̶o̴", "zalgo"),
        ("İstanbul", "istanbul"),
        ("Straße", "strasse"),
        # look-alike letters from other scripts
        ("ѕһіt", "shit"),  # Cyrillic
        ("іԁіоt", "idiot"),
        ("ΗΕLLΟ", "hello"),  # Greek capitals that look Latin
        ("ʙɪᴛᴄʜ", "bitch"),  # small capitals
        ("you’re", "you're"),
        # invisible characters
        ("fu\u200bck", "fuck"),
        ("s\u200ch\u200di\u2060t", "shit"),
        ("id\u00adiot", "idiot"),  # soft hyphen
        ("b\ufeffitch", "bitch"),
        ("a\ufe0fss", "ass"),  # variation selector
        ("f\u3164uck", "fuck"),  # Hangul filler
        # leetspeak inside words
        ("1d10t", "idiot"),
        ("$h!t", "shit"),
        ("a55hole", "asshole"),
        ("h4te", "hate"),
        ("@ss", "ass"),
        ("5tup1d", "stupid"),
        ("8itch", "bitch"),
        ("k!ll", "kill"),
        # spacing tricks
        ("s p a c e d", "spaced"),
        ("s.p.a.c.e.d", "spaced"),
        ("s-p-a-c-e-d", "spaced"),
        ("s_p_a_c_e_d", "spaced"),
        ("s*p*a*c*e*d", "spaced"),
        ("f  u  c  k", "fuck"),
        ("f u c k  y o u", "fuck  you"),
        ("5 h 1 t", "shit"),
        ("ѕ.һ.і.t", "shit"),
    ],
)
def test_obfuscation_is_undone(text: str, expected: str) -> None:
    assert normalize(text).text == expected


@pytest.mark.parametrize(
    "text",
    [
        "I bought 5 apples for $3 at 7am.",
        "Python 3.11 is faster than 3.10",
        "C++ is fun!",
        "wow!!! great!",
        "Meet me at 4:30 in room 101.",
        "Our budget is $1,500.",
        "e.g. this",
        "A B",
        "The 2nd and 3rd runs took 10km and 7am to 5pm, 3d printed at 60fps.",
    ],
)
def test_ordinary_numbers_and_punctuation_are_left_alone(text: str) -> None:
    assert normalize(text).text == text.lower()


def test_leetspeak_is_read_only_in_words_that_have_a_letter() -> None:
    normalized = normalize("h3ll0 5 w0rld 2024")
    assert normalized.text == "hello 5 world 2024"


def test_every_character_maps_back_to_where_the_user_wrote_it() -> None:
    original = "Oh, you are a ѕ t u p і d i\u200bd\u200bi\u200bo\u200bt!"
    normalized = normalize(original)
    assert normalized.text == "oh, you are astupid idiot!"
    assert len(normalized.offsets) == len(normalized.text)
    start = normalized.text.index("stupid")
    assert normalized.original_text(start, start + 6) == "ѕ t u p і d"
    start = normalized.text.index("idiot")
    assert normalized.original_text(start, start + 5) == "i\u200bd\u200bi\u200bo\u200bt"
    for index, char in enumerate(normalized.text):
        if char.isascii() and char.isalpha():
            source = normalized.original[normalized.offsets[index]]
            assert normalize(source).text == char


def test_an_expanded_character_maps_back_whole() -> None:
    normalized = normalize("ﬁne Fück")
    assert normalized.text == "fine fuck"
    assert normalized.original_text(0, 1) == "ﬁ"
    assert normalized.original_text(0, 4) == "ﬁne"
    assert normalized.original_text(5, 9) == "Fück"


def test_a_span_takes_in_the_accents_that_were_dropped() -> None:
    normalized = normalize("cafe\u0301 ok")
    assert normalized.text == "cafe ok"
    assert normalized.original_text(0, 4) == "cafe\u0301"


def test_spans_outside_the_text_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        normalize("abc").original_span(2, 9)


def test_folded_text_keeps_digits_and_symbols() -> None:
    normalized = normalize("Mail ME at b0b@ｅxample.com")
    assert normalized.folded == "mail me at b0b@example.com"
    assert normalized.text == "mail me at bobaexample.com"  # "@" inside a word reads "a"
    start = normalized.folded.index("b0b")
    assert normalized.original_text(start, start + 3, folded=True) == "b0b"


def test_spaced_runs_are_recorded() -> None:
    normalized = normalize("hey f u c k off")
    assert normalized.text == "hey fuck off"
    assert normalized.spaced_runs == ((4, 8),)


def test_a_one_letter_word_before_spaced_letters_gives_a_second_reading() -> None:
    normalized = normalize("you are a s t u p i d idiot")
    assert normalized.text == "you are astupid idiot"
    assert normalized.split_readings == ("you are a stupid idiot",)


def test_one_and_pipe_are_also_read_as_l_and_i() -> None:
    assert normalize("1oser").text == "ioser"
    assert "loser" in normalize("1oser").readings
    assert "idiot" in normalize("|d|ot").readings


def test_words_written_only_in_leetspeak_are_another_reading() -> None:
    normalized = normalize("show me your 7175")
    assert normalized.text == "show me your 7175"  # numbers stay numbers in the main text
    assert "show me your tits" in normalized.readings
    assert all(len(reading) == len(normalized.text) for reading in normalized.readings)


def test_plain_text_has_no_other_readings() -> None:
    normalized = normalize("A perfectly ordinary sentence.")
    assert normalized.readings == ()
    assert normalized.split_readings == ()
    assert normalized.spaced_runs == ()


def test_without_invisibles_keeps_everything_a_reader_sees() -> None:
    assert without_invisibles("fu\u200bck\u00ad you") == "fuck you"
    assert without_invisibles("Café\tok\n") == "Café\tok\n"
    assert without_invisibles("plain") == "plain"
