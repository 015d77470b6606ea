"""The words mail clients write around quoted history, in the languages reporters use.

Owns the vocabulary `gateway.parse.mailquote` matches against: the header labels of Outlook-style
blocks ("From:/Sent:/To:/Subject:" and their translations), the verbs of attribution lines
("wrote", "schrieb", "a écrit", "пишет", …), the titles of "Original Message" separators and
forward markers, and the mobile footers ("Sent from my iPhone", "Envoyé depuis mon iPhone",
"Sendt fra min iPad", …). Each list is data; the patterns are compiled once here.
"""

from __future__ import annotations

import re

# Labels of a quoted header block, by role, as Outlook, Apple Mail, Lotus Notes, Samsung
# Email and webmail write them in their display languages.
FROM_LABELS = (
    "from",
    "von",
    "de",
    "da",
    "van",
    "från",
    "fra",
    "od",
    "от",
    "від",
    "lähettäjä",
    "feladó",
    "kimden",
    "από",
    "expéditeur",
    "remitente",
    "mittente",
    "发件人",
    "寄件者",
    "差出人",
)
SENT_LABELS = (
    "sent",
    "date",
    "gesendet",
    "datum",
    "envoyé",
    "enviado",
    "enviado el",
    "enviada em",
    "enviado em",
    "inviato",
    "data",
    "verzonden",
    "skickat",
    "sendt",
    "wysłano",
    "wysłane",
    "odesláno",
    "отправлено",
    "дата",
    "надіслано",
    "відправлено",
    "lähetetty",
    "elküldve",
    "gönderildi",
    "tarih",
    "ημερομηνία",
    "发送时间",
    "日期",
    "日付",
    "送信日時",
)
TO_LABELS = (
    "to",
    "an",
    "à",
    "a",
    "para",
    "aan",
    "till",
    "til",
    "do",
    "komu",
    "кому",
    "vastaanottaja",
    "címzett",
    "kime",
    "προς",
    "pour",
    "destinataire",
    "收件人",
    "宛先",
)
SUBJECT_LABELS = (
    "subject",
    "betreff",
    "objet",
    "sujet",
    "asunto",
    "assunto",
    "oggetto",
    "onderwerp",
    "ämne",
    "emne",
    "temat",
    "předmět",
    "тема",
    "aihe",
    "tárgy",
    "konu",
    "θέμα",
    "主题",
    "件名",
)
CC_LABELS = ("cc", "kopie", "kopia", "копия", "копія", "kopio", "másolat")

# Verbs (and phrases) that end an attribution line: "On …, Bob <b@x> wrote:".
ATTRIBUTION_VERBS = (
    "wrote",
    "writes",
    "wrote on",
    "schrieb",
    "schreibt",
    "a écrit",
    "écrit",
    "escribió",
    "escribio",
    "ha scritto",
    "scrive",
    "schreef",
    "het volgende geschreven",
    "escreveu",
    "skrev",
    "skriver",
    "kirjoitti",
    "napisał\\(a\\)",
    "napisał",
    "napisała",
    "pisze",
    "wiadomość napisana przez",
    "пишет",
    "написал\\(а\\)",
    "написал",
    "написала",
    "пише",
    "написав",
    "napsal\\(a\\)",
    "napsal",
    "napsala",
    "írta",
    "yazdı",
    "έγραψε",
    "skrifaði",
)

# Titles between dashes that start appended history: "-----Original Message-----",
# "-------- Ursprüngliche Nachricht --------", "---------- Forwarded message ---------".
SEPARATOR_TITLES = (
    "original message",
    "ursprüngliche nachricht",
    "originalnachricht",
    "message d'origine",
    "message original",
    "mensaje original",
    "mensagem original",
    "messaggio originale",
    "oorspronkelijk bericht",
    "origineel bericht",
    "ursprungligt meddelande",
    "originalmeddelande",
    "opprinnelig melding",
    "oprindelig meddelelse",
    "wiadomość oryginalna",
    "oryginalna wiadomość",
    "původní zpráva",
    "исходное сообщение",
    "оригинальное сообщение",
    "вихідне повідомлення",
    "оригінальне повідомлення",
    "alkuperäinen viesti",
    "eredeti üzenet",
    "orijinal ileti",
    "forwarded message",
    "weitergeleitete nachricht",
    "message transféré",
    "mensaje reenviado",
    "messaggio inoltrato",
    "doorgestuurd bericht",
    "vidarebefordrat meddelande",
    "пересылаемое сообщение",
    "переслане повідомлення",
    "reply message",
)

# Apple Mail and others: one line, then the forwarded message's header block.
FORWARD_MARKERS = (
    "begin forwarded message",
    "anfang der weitergeleiteten nachricht",
    "début du message réexpédié",
    "début du message transféré",
    "inicio del mensaje reenviado",
    "inizio messaggio inoltrato",
    "begin doorgestuurd bericht",
    "vidarebefordrat mejl",
    "videresendt melding",
    "начало переадресованного сообщения",
    "początek przekazywanej wiadomości",
)

# Mobile and app footers: a prefix, then at most four words naming a device or an app.
FOOTER_PREFIXES = (
    "sent from my",
    "sent from",
    "sent with",
    "sent via",
    "sent using",
    "get outlook for",
    "von meinem",
    "gesendet von meinem",
    "gesendet von",
    "gesendet mit",
    "envoyé de mon",
    "envoyé depuis mon",
    "envoyé à partir de mon",
    "envoyé avec",
    "enviado desde mi",
    "enviado desde",
    "enviado do meu",
    "enviado de meu",
    "enviado do",
    "inviato da",
    "inviato dal mio",
    "verzonden vanaf mijn",
    "verstuurd vanaf mijn",
    "verzonden met",
    "skickat från min",
    "skickat från",
    "sendt fra min",
    "sendt fra",
    "lähetetty",
    "wysłane z mojego",
    "wysłane z",
    "wysłano z",
    "отправлено с",
    "отправлено из",
    "надіслано з",
    "відправлено з",
    "odesláno z",
)
FOOTER_DEVICES = (
    "iphone",
    "ipad",
    "ipod",
    "android",
    "galaxy",
    "samsung",
    "blackberry",
    "outlook",
    "mail",
    "yahoo",
    "aol",
    "huawei",
    "xiaomi",
    "pixel",
    "nokia",
    "mobile",
    "smartphone",
    "phone",
    "handy",
    "móvil",
    "movil",
    "cellulare",
    "telefon",
    "portable",
    "телефон",
    "телефона",
    "mobil",
    "protonmail",
    "proton",
    "spark",
    "windows",
    "gmail",
    "tablet",
    "iphonesta",
    "ipadista",
    "puhelimesta",
    "fairemail",
    "k-9",
)


def alternation(words: tuple[str, ...]) -> str:
    """A regex alternation of `words` (already regex-escaped where they need it), longest first."""
    return "|".join(sorted(words, key=len, reverse=True))


def _escaped(words: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(re.escape(w) for w in words)


def label_pattern(labels: tuple[str, ...]) -> re.Pattern[str]:
    """A header label at the start of a line: "From:", "*From:*", "**Von:**", " Sent:\t"."""
    return re.compile(
        rf"^\s*[*_]*(?:{alternation(_escaped(labels))})\s?[*_]*\s?[:：][*_]*(?:\s|$)", re.IGNORECASE
    )


FROM_LINE = label_pattern(FROM_LABELS)
SENT_LINE = label_pattern(SENT_LABELS)
TO_LINE = label_pattern(TO_LABELS)
SUBJECT_LINE = label_pattern(SUBJECT_LABELS)
CC_LINE = label_pattern(CC_LABELS)
# A whole header block joined on one line by a converter: "From: A Sent: … To: B Subject: …"
# (searched in two steps, the second from where the first ended, so never backtracking).
INLINE_SENT = re.compile(rf"\s(?:{alternation(_escaped(SENT_LABELS))})\s?:", re.IGNORECASE)
INLINE_TO = re.compile(
    rf"\s(?:{alternation(_escaped(TO_LABELS + SUBJECT_LABELS))})\s?:", re.IGNORECASE
)

# A verb of writing as a word; an attribution has it within its last VERB_REACH characters.
VERB = re.compile(
    rf"(?:^|[\s,.)>\]\"'])(?:{alternation(ATTRIBUTION_VERBS)})(?=[\s:：]|$)", re.IGNORECASE
)
VERB_REACH = 230
SEPARATOR = re.compile(
    rf"^[\s>]*[-=_*]{{2,}}\s*(?:{alternation(_escaped(SEPARATOR_TITLES))})\s*[-=_*]{{2,}}\s*$",
    re.IGNORECASE,
)
# Any dashed title, e.g. Zoho's "---- On Thu, 03 Mar 2016 … Bob <b@x> wrote ----".
DASHED_TITLE = re.compile(r"^[-=]{3,}\s*(\S.{1,300}?)\s*[-=]{3,}\s*$")
# Korean and Chinese Gmail put the verb right after the name or date, with no space.
CJK_VERB_END = re.compile(r"(?:님이 작성|写道|寫道|のメッセージ)\s?[:：]$")
FORWARD = re.compile(rf"^(?:{alternation(_escaped(FORWARD_MARKERS))})\s?:\s*$", re.IGNORECASE)
FOOTER = re.compile(
    rf"^(?:{alternation(_escaped(FOOTER_PREFIXES))})\s(?:[\w'’.+-]+(?:\s[\w'’.+-]+){{0,3}})"
    r"\.?\s*(?:<https?://[^>\s]*>)?$",
    re.IGNORECASE,
)
FOOTER_DEVICE = re.compile(rf"(?:{alternation(_escaped(FOOTER_DEVICES))})", re.IGNORECASE)
# Outlook's localised app footers: "Get Outlook for iOS", "Outlook für Android herunterladen".
FOOTER_OUTLOOK = re.compile(
    r"^(?:\w+\s)?outlook\s\w+\s(?:ios|android)(?:\s\w+)?\s*(?:<https?://[^>\s]*>)?$", re.IGNORECASE
)
# Japanese and Chinese clients put the device first: "iPhoneから送信", "发自我的iPhone".
FOOTER_CJK = re.compile(r"^(?:\S{2,20}から送信|发自我的\S{2,20}|從我的\S{2,20}傳送)$")
