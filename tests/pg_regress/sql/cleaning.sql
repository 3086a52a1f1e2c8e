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

-- issue 27: a hostile user's inputs. `error_of` shows the SQLSTATE with the message.
CREATE FUNCTION pg_temp.error_of(query text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE query;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- n-grams of every length below n: matching a row is linear in its length (1,500 items of
-- 1..1,500 words under n = 2147483647 against two 5,000-word rows took 45-71 s), and a
-- cancel is seen within a row: a 3 s statement_timeout ends a 300,000-word row's matching
-- within seconds, and the backend is usable after it
CREATE TABLE long_items AS
SELECT l AS id, (SELECT string_agg('w' || i % 1777, ' ') FROM generate_series(l, 2 * l - 1) i) AS text
FROM generate_series(1, 1500) l;
CREATE TABLE long_rows AS
SELECT r AS id, (SELECT string_agg('w' || i % 1777, ' ') FROM generate_series(0, 4999) i) AS text
FROM generate_series(1, 2) r;
CREATE TABLE huge_row AS
SELECT 1 AS id, (SELECT string_agg('x' || i, ' ') FROM generate_series(1, 300000) i) AS text;
SET statement_timeout = '3s';
SELECT count(*) AS pairs, min(score), max(score)
FROM airrep.contamination('long_rows', 'long_items', '{ngram}', ngram => 2147483647);
DO $$
DECLARE
    started timestamptz := clock_timestamp();
BEGIN
    PERFORM count(*) FROM airrep.contamination('huge_row', 'long_items', '{ngram}', ngram => 2147483647);
    RAISE NOTICE 'the 300,000-word row finished within the timeout';
EXCEPTION WHEN query_canceled THEN
    RAISE NOTICE 'canceled (%) within 6 s: %', SQLERRM, clock_timestamp() - started < interval '6 s';
END $$;
RESET statement_timeout;
SELECT 1 AS usable;
DROP TABLE long_items, long_rows, huge_row;
-- nothing below the threshold is returned, nothing at it is lost: cosines 0.8999988 and
-- 0.89999996 are below 0.9 (a slack of 2e-6 reported both); 3/5 is exactly 0.6; a zero
-- vector is similar to nothing, and orthogonal rows have cosine 0, below any threshold
CREATE TABLE near (id int, text text, embedding airrep_vector);
INSERT INTO near VALUES (1, 'a', '[1,0]'), (2, 'b', '[0.9,0.435893]'), (3, 'c', '[0.9,0.43589]'),
                        (4, 'd', '[3,4]'), (5, 'e', '[0,0]'), (6, 'f', '[0,1]');
SELECT id, cluster_id, similarity FROM airrep.near_duplicates('near', 0.9) ORDER BY 1;
SELECT id, cluster_id, similarity FROM airrep.near_duplicates('near', 0.6) ORDER BY 1;
SELECT count(*) AS pairs FROM airrep.near_duplicates('near', 1e-6) WHERE similarity < 1e-6;
SELECT train_id, benchmark_id, score FROM airrep.contamination('near', 'near', '{embedding}', threshold => 0.9)
WHERE train_id <> benchmark_id ORDER BY 1, 2;
SELECT train_id, benchmark_id, score FROM airrep.contamination('near', 'near', '{embedding}', threshold => 0.6)
WHERE train_id = 4 AND benchmark_id = 1;
SELECT train_id, benchmark_id, score FROM airrep.contamination('near', 'near', '{embedding}', threshold => 1e-6)
WHERE score < 1e-6;
-- a repeated id is an error (23505), as in top_k and select_data: a row inserted twice was
-- never reported by near_duplicates, and contamination returned its pair four times
CREATE TABLE twice AS SELECT * FROM near WHERE id IN (1, 2);
INSERT INTO twice SELECT * FROM near WHERE id = 1;
SELECT pg_temp.error_of($$SELECT * FROM airrep.near_duplicates('twice', 1)$$);
SELECT pg_temp.error_of($$SELECT * FROM airrep.contamination('twice', 'near')$$);
SELECT pg_temp.error_of($$SELECT * FROM airrep.contamination('near', 'twice', '{embedding}')$$);
-- a NULL vector is no row of the embedding method, so its id may repeat there
UPDATE twice SET embedding = NULL WHERE ctid = (SELECT max(ctid) FROM twice);
SELECT count(*) FROM airrep.contamination('twice', 'near', '{embedding}');
DROP TABLE near, twice;
-- full Unicode case folding, as Python's str.casefold(): 'Straße' is 'STRASSE'
CREATE TABLE folded (id int, text text);
INSERT INTO folded VALUES (1, 'Die Straße'), (2, 'ΣΊΣΥΦΟΣ'), (3, 'ﬀ');
CREATE TABLE shouted (id int, text text);
INSERT INTO shouted VALUES (10, 'DIE STRASSE'), (11, 'σίσυφος'), (12, 'FF');
SELECT train_id, benchmark_id, method FROM airrep.contamination('shouted', 'folded', '{exact,ngram}', ngram => 2)
ORDER BY 1, 2, 3;
DROP TABLE folded, shouted;
-- a regclass OID that names no relation is undefined_table (42P01), not an internal error
SELECT pg_temp.error_of($$SELECT * FROM airrep.near_duplicates(4000000000::oid::regclass)$$);
SELECT pg_temp.error_of($$SELECT * FROM airrep.contamination('train', 4000000000::oid::regclass)$$);

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
