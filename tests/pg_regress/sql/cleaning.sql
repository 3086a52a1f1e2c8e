-- airrep.near_duplicates and airrep.contamination on planted data: verbatim copies, copies
-- with added prefix or suffix text, case and punctuation changes, a word-level paraphrase,
-- and unrelated rows that share only a template. Vectors are MiniLM's (the real model).
SELECT airrep.load_model('minilm', '/tmp/airrep-fixtures/minilm') > 0 AS loaded;
CREATE TABLE bench (id int, suite text, text text, embedding airrep_vector(384));
INSERT INTO bench (id, suite, text) VALUES
    (1, 'trivia', 'The capital city of Australia is Canberra, not Sydney as many people believe.'),
    (2, 'trivia', 'Water boils at one hundred degrees Celsius at sea level under normal atmospheric pressure.'),
    (3, 'math', 'If a train travels sixty miles in one hour, how far does it travel in three and a half hours?'),
    (4, 'math', 'Question: what is the derivative of x squared with respect to x? Answer: two times x.'),
    (5, 'trivia', 'The largest planet in our solar system is Jupiter, a gas giant.'),
    (6, 'trivia', 'école normale supérieure à Paris');
CREATE TABLE train (id int, kind text, text text, embedding airrep_vector(384));
INSERT INTO train (id, kind, text) VALUES
    (10, 'verbatim of 1', 'The capital city of Australia is Canberra, not Sydney as many people believe.'),
    (11, 'case and punctuation of 1', 'the CAPITAL city of australia is canberra -- not sydney, as many people believe!!'),
    (12, 'prefix and suffix on 2', 'Fun fact: water boils at one hundred degrees Celsius at sea level under normal atmospheric pressure. Remember it.'),
    (13, 'paraphrase of 3', 'If a train journeys sixty miles in one hour, how far does it go in three and a half hours?'),
    (14, 'template of 4', 'Question: what is the capital of Peru in South America? Answer: the city of Lima.'),
    (15, 'unrelated', 'Bananas are rich in potassium and make a good snack before exercise.'),
    (16, 'verbatim of 1', 'The capital city of Australia is Canberra, not Sydney as many people believe.'),
    (17, 'unrelated', 'Knitting a scarf takes patience, soft wool and a pair of long needles.'),
    (18, 'fullwidth and ligature of 5', 'ＴＨＥ largest planet in our solar system is Jupiter, a gas ﬁant.'),
    (19, 'accented capitals of 6', 'ÉCOLE NORMALE SUPÉRIEURE, À PARIS.');
UPDATE bench SET embedding = airrep.encode('minilm', text);
UPDATE train SET embedding = airrep.encode('minilm', text);

-- what each method finds, with its score (NFKC folds the full-width letters; the "ﬁ"
-- ligature becomes "fi", so row 18 is no exact copy of item 5)
SELECT c.method, c.train_id, t.kind, c.benchmark_id, round(c.score::numeric, 3) AS score
FROM airrep.contamination('train', 'bench') c JOIN train t ON t.id = c.train_id
ORDER BY c.method, c.train_id, c.benchmark_id;
-- a short n-gram catches the paraphrase's unchanged stretches; the template stays apart
SELECT train_id, benchmark_id, round(score::numeric, 3) AS score
FROM airrep.contamination('train', 'bench', '{ngram}', ngram => 5) ORDER BY 1, 2;

-- the report for a model card: share of each suite's items with a contaminated row, by method
SELECT s.suite, m.method,
       count(DISTINCT c.benchmark_id) AS contaminated, count(DISTINCT b.id) AS items,
       round(count(DISTINCT c.benchmark_id)::numeric / count(DISTINCT b.id), 2) AS share
FROM bench b
JOIN (SELECT DISTINCT suite FROM bench) s USING (suite)
CROSS JOIN unnest('{exact,ngram,embedding}'::text[]) m(method)
LEFT JOIN airrep.contamination('train', 'bench') c ON c.benchmark_id = b.id AND c.method = m.method
GROUP BY s.suite, m.method ORDER BY 1, 2;

-- near duplicates within train: the verbatim pair, the case-changed copy with it
SELECT d.id, t.kind, d.cluster_id, d.keep, d.nearest_id, round(d.similarity::numeric, 3) AS similarity
FROM airrep.near_duplicates('train') d JOIN train t USING (id) ORDER BY 1;
SELECT id, cluster_id, keep FROM airrep.near_duplicates('train', 0.8, 'central') ORDER BY 1;
-- identical rows meet threshold 1 despite f32 rounding
SELECT id, cluster_id, keep, similarity FROM airrep.near_duplicates('train', 1) ORDER BY 1;
-- keeping one per cluster: the anti-join that builds a clean training view
CREATE VIEW clean_train AS
SELECT t.* FROM train t
WHERE NOT EXISTS (SELECT 1 FROM airrep.near_duplicates('train') d WHERE d.id = t.id AND NOT d.keep)
  AND NOT EXISTS (SELECT 1 FROM airrep.contamination('train', 'bench') c WHERE c.train_id = t.id);
SELECT id, kind FROM clean_train ORDER BY id;

-- the clusters equal a brute-force reference over all pairs on a larger random set
CREATE TABLE random_rows AS
SELECT i AS id, ARRAY[(i * 7) % 5, (i * 3) % 4, i % 3, 1]::real[]::airrep_vector AS embedding
FROM generate_series(1, 300) i;
WITH RECURSIVE edges AS (
    SELECT a.id AS a, b.id AS b FROM random_rows a, random_rows b
    WHERE a.id <> b.id AND 1 - (a.embedding <=> b.embedding) >= 0.95 - 1e-6
), reach(id, member) AS (
    SELECT a, a FROM edges UNION SELECT r.id, e.b FROM reach r JOIN edges e ON e.a = r.member
), reference AS (
    SELECT id, min(member) AS cluster_id FROM reach GROUP BY id
)
SELECT (SELECT count(*) FROM reference) AS members,
       (SELECT count(*) FROM (SELECT id, cluster_id FROM reference
                              EXCEPT SELECT id, cluster_id FROM airrep.near_duplicates('random_rows', 0.95)) d) AS differ,
       (SELECT count(*) FROM airrep.near_duplicates('random_rows', 0.95)) AS found,
       (SELECT count(DISTINCT cluster_id) = count(*) FILTER (WHERE keep) FROM airrep.near_duplicates('random_rows', 0.95)) AS one_keep_per_cluster;

-- contamination streams its rows: identical rows matched with themselves make 400 million
-- pairs per method, which are neither held in memory nor keep a cancel waiting
CREATE TABLE same_rows AS
SELECT i AS id, 'the same text again and again' AS text, ARRAY[1, 0]::real[]::airrep_vector AS embedding
FROM generate_series(1, 20000) i;
SET statement_timeout = '1s';
SELECT count(*) FROM airrep.contamination('same_rows', 'same_rows', '{exact}');
SELECT count(*) FROM airrep.contamination('same_rows', 'same_rows', '{ngram}', ngram => 2);
SELECT count(*) FROM airrep.contamination('same_rows', 'same_rows', '{embedding}');
RESET statement_timeout;
-- every pair is found when the training rows span several blocks: 300 copies (other case
-- and punctuation, a longer vector) among 9,000 rows against 300 identical items, so
-- 90,000 pairs per method
CREATE TABLE same_items AS SELECT * FROM same_rows WHERE id <= 300;
CREATE TABLE copies AS
SELECT i AS id,
       CASE WHEN i % 30 = 0 THEN 'The SAME text, again and again!' ELSE 'row ' || i END AS text,
       (CASE WHEN i % 30 = 0 THEN ARRAY[2, 0] ELSE ARRAY[0, 1] END)::real[]::airrep_vector AS embedding
FROM generate_series(1, 9000) i;
SELECT method, count(*) AS pairs, count(DISTINCT train_id) AS train_rows,
       count(DISTINCT benchmark_id) AS items, min(score), max(score)
FROM airrep.contamination('copies', 'same_items', ngram => 2) GROUP BY method ORDER BY method;
-- a method named twice is one method
SELECT count(*) FROM airrep.contamination('copies', 'same_items', '{exact,exact}');
DROP TABLE same_rows, same_items, copies;

-- errors
SELECT * FROM airrep.near_duplicates('train', 0);
SELECT * FROM airrep.near_duplicates('train', 1.5);
SELECT * FROM airrep.near_duplicates('train', 0.9, 'newest');
SELECT * FROM airrep.near_duplicates('train', vector_column => 'vec');
SELECT * FROM airrep.contamination('train', 'bench', '{exact,fuzzy}');
SELECT * FROM airrep.contamination('train', 'bench', '{}');
SELECT * FROM airrep.contamination('train', 'bench', ngram => 0);
SELECT * FROM airrep.contamination('train', 'bench', threshold => -0.1);
SELECT * FROM airrep.contamination('train', 'bench', text_column => 'body');
SELECT * FROM airrep.contamination('train', 'bench', text_column => 'id');
DROP VIEW clean_train;
DROP TABLE bench, train, random_rows;
