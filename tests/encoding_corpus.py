"""A generated corpus of small exports in the code pages CRMs write (issue 15).

Western files (cp1252) in Spanish, French, German, Portuguese and Italian, and files in
cp1251 (Russian), Shift-JIS (Japanese), GB18030 (Chinese) and ISO-8859-7 (Greek): 1-20 rows,
a header, a few columns, ``,`` or ``;``. Deterministic for a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

WORDS: dict[str, dict[str, list[str]]] = {
    "es": {
        "first": ["José", "María", "Núria", "Jesús", "Sofía", "Íñigo", "Begoña", "Ángel", "Lucía",
                  "Andrés", "Martín", "Inés", "Raúl", "Àlex", "Joaquín", "Ramón", "Pilar"],
        "last": ["Núñez", "Pérez", "Gómez", "Muñoz", "Ibáñez", "Peña", "Martínez", "Sánchez",
                 "López", "Fernández", "García", "Álvarez", "Rodríguez", "Castañeda", "Ortiz"],
        "city": ["Córdoba", "Cádiz", "León", "Málaga", "Logroño", "Ávila", "Jaén", "Almería",
                 "A Coruña", "Cáceres", "Alcalá de Henares", "Madrid", "Sevilla"],
        "note": ["cliente desde 2019", "envío urgente", "dirección incompleta", "señal pagada",
                 "pidió información", "atención al cliente", "¿llamar mañana?", "¡gracias!",
                 "teléfono de la oficina", "Nº 12, 3º B", "pagó 12,50 €", "campaña otoño"],
    },
    "fr": {
        "first": ["Hélène", "François", "Zoé", "Jérôme", "Gaëlle", "Anaïs", "Léa", "Benoît",
                  "Noël", "Cécile", "Étienne", "Chloé", "Maëlys", "Raphaël", "Amélie"],
        "last": ["Lefèvre", "Bérubé", "Gagné", "Côté", "Lévesque", "Dupré", "Fréchette",
                 "Mercier", "Ménard", "Bélanger", "Thériault", "Leclerc", "Béliveau"],
        "city": ["Besançon", "Orléans", "Nîmes", "Évry", "Montréal", "Québec", "Sète", "Agen",
                 "Saint-Étienne", "Angoulême", "Lyon", "Nancy"],
        "note": ["déjà client", "à rappeler", "adresse erronée", "l’été dernier",
                 "rendez-vous à 14 h", "très intéressé", "c’est noté", "œuvre d’art",
                 "prix : 30 €", "« urgent »", "réduction été", "où livrer ?"],
    },
    "de": {
        "first": ["Jürgen", "Björn", "Käthe", "Günther", "Jörg", "Müller", "Dörte", "Lena",
                  "Maximilian", "Sören", "Anneliese", "Uwe", "Bärbel"],
        "last": ["Müller", "Schäfer", "Größer", "Weiß", "Köhler", "Bäcker", "Schröder", "Fuß",
                 "Krüger", "Hoffmann", "Böhm", "Jäger", "Vogt", "Strauß"],
        "city": ["München", "Köln", "Düsseldorf", "Nürnberg", "Würzburg", "Lübeck", "Gießen",
                 "Göttingen", "Saarbrücken", "Berlin", "Straße 5"],
        "note": ["Rückruf erbeten", "Größe unbekannt", "bezahlt", "schöne Grüße",
                 "Änderung übernommen", "Kündigung zum 31.12.", "Öffnungszeiten prüfen",
                 "für Überweisung", "Preis 9,99 €", "Lieferung „heute“"],
    },
    "pt": {
        "first": ["João", "Conceição", "Inês", "Tomás", "Gonçalo", "Lúcia", "Sebastião", "Márcia",
                  "Vitória", "André", "Luís", "Adélia", "Cátia"],
        "last": ["Gonçalves", "Magalhães", "Simões", "Guimarães", "Araújo", "Antunes", "Pião",
                 "Brandão", "Falcão", "Conceição", "Estêvão", "Sá", "Assunção"],
        "city": ["São Paulo", "Maceió", "Belém", "Brasília", "Goiânia", "Lisboa", "Évora",
                 "Guimarães", "Porto", "Niterói", "Viseu"],
        "note": ["cliente há anos", "ligação pendente", "promoção de verão", "atenção: endereço",
                 "não ligar", "reunião às 10h", "informações", "pagamento em dinheiro",
                 "ações vendidas", "AÇÕES", "crédito aprovado"],
    },
    "it": {
        "first": ["Niccolò", "Giosuè", "Mattia", "Nicolò", "Lucía", "Elisa", "Tommaso", "Irene",
                  "Gabriele", "Noemi", "Davide"],
        "last": ["Rossi", "Bianchi", "Caffè", "Forlì", "Citti", "De Luca", "Mazzà", "Pellè",
                 "Nicolò", "Santangelo", "Cantù"],
        "city": ["Forlì", "Cantù", "Mondovì", "Sanremo", "Città di Castello", "Roma", "Milano",
                 "Cefalù", "Paternò", "Torino"],
        "note": ["già cliente", "perché no?", "più tardi", "così così", "città natale",
                 "qualità ottima", "è urgente", "attività chiusa", "caffè offerto", "prezzo 5 €"],
    },
    "ru": {
        "first": ["Иван", "Ольга", "Сергей", "Наталья", "Дмитрий", "Юлия", "Алексей", "Ёлка"],
        "last": ["Иванов", "Петрова", "Смирнов", "Кузнецова", "Попов", "Соколова", "Лебедев"],
        "city": ["Москва", "Санкт-Петербург", "Новосибирск", "Казань", "Самара", "Омск"],
        "note": ["постоянный клиент", "перезвонить", "адрес неверный", "оплачено", "скидка 10%"],
    },
    "ja": {
        "first": ["太郎", "花子", "さくら", "健太", "陽菜", "翔太", "ゆい", "大輔"],
        "last": ["田中", "佐藤", "鈴木", "高橋", "渡辺", "伊藤", "山本", "中村"],
        "city": ["東京", "大阪", "名古屋", "札幌", "福岡", "横浜", "京都", "神戸"],
        "note": ["既存顧客", "折り返し電話", "住所不明", "支払い済み", "セール対象"],
    },
    "zh": {
        "first": ["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "洋"],
        "last": ["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周"],
        "city": ["北京", "上海", "广州", "深圳", "成都", "杭州", "武汉", "西安"],
        "note": ["老客户", "请回电", "地址错误", "已付款", "促销活动"],
    },
    "el": {
        "first": ["Γιώργος", "Μαρία", "Νίκος", "Ελένη", "Δημήτρης", "Κατερίνα", "Γιάννης"],
        "last": ["Παπαδόπουλος", "Παπαδοπούλου", "Οικονόμου", "Γεωργίου", "Νικολάου"],
        "city": ["Αθήνα", "Θεσσαλονίκη", "Πάτρα", "Ηράκλειο", "Λάρισα", "Βόλος"],
        "note": ["πελάτης", "επικοινωνία", "διεύθυνση λάθος", "πληρώθηκε", "προσφορά"],
    },
}

#: language -> the code page its files are written in
CODEC = {"es": "cp1252", "fr": "cp1252", "de": "cp1252", "pt": "cp1252", "it": "cp1252",
         "ru": "cp1251", "ja": "shift_jis", "zh": "gb18030", "el": "iso8859_7"}


@dataclass(frozen=True)
class CorpusFile:
    name: str
    language: str
    codec: str
    text: str  # what the file says, as the user would read it

    @property
    def data(self) -> bytes:
        return self.text.encode(self.codec)


def make_file(rng: random.Random, language: str, index: int) -> CorpusFile:
    words = WORDS[language]
    delimiter = rng.choice([",", ";"])
    columns = ["id", "first_name", "last_name", "city", "note"][: rng.randint(2, 5)]
    lines = [delimiter.join(columns)]
    for row in range(rng.randint(1, 20)):
        values = [f"C{index:04d}{row:02d}", rng.choice(words["first"]),
                  rng.choice(words["last"]), rng.choice(words["city"]), rng.choice(words["note"])]
        cells = [f'"{v}"' if delimiter in v else v for v in values[: len(columns)]]
        lines.append(delimiter.join(cells))
    newline = rng.choice(["\n", "\r\n"])
    return CorpusFile(f"{language}_{index:04d}.csv", language, CODEC[language],
                      newline.join(lines) + newline)


def corpus(western: int, others: int, seed: int = 15) -> list[CorpusFile]:
    """``western`` cp1252 files spread over five languages, ``others`` per other code page."""
    rng = random.Random(seed)
    files = [make_file(rng, rng.choice(["es", "fr", "de", "pt", "it"]), i) for i in range(western)]
    for language in ("ru", "ja", "zh", "el"):
        files += [make_file(rng, language, i) for i in range(others)]
    return files
