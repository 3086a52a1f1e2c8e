-- The airrep demo: embed a small training pool and ask which rows and subsets help a target.
\pset footer off
\timing off
CREATE EXTENSION airrep;
SET client_min_messages = warning;

\echo '-- load MiniLM-L6 into the registry (stored as chunked bytea)'
SELECT airrep.load_model('minilm', :'model_dir') AS model_id;
SELECT name, layers, hidden_size, total_size FROM airrep.model_list;

CREATE TABLE examples (
    id bigint PRIMARY KEY, prompt text, response text,
    body text GENERATED ALWAYS AS (airrep.format(prompt, response)) STORED,
    embedding airrep_vector(384));
INSERT INTO examples (id, prompt, response) VALUES
 (1, 'What is the capital of France?', 'Paris is the capital of France.'),
 (2, 'Name the largest city in Japan.', 'Tokyo is the largest city in Japan.'),
 (3, 'Which river flows through Cairo?', 'The Nile flows through Cairo.'),
 (4, 'What is the capital of Italy?', 'Rome is the capital of Italy.'),
 (5, 'What is 7 times 8?', '7 times 8 is 56.'),
 (6, 'Add 125 and 375.', '125 plus 375 equals 500.'),
 (7, 'What is the square root of 81?', 'The square root of 81 is 9.'),
 (8, 'Divide 144 by 12.', '144 divided by 12 is 12.'),
 (9, 'How do I boil an egg?', 'Place the egg in boiling water for about nine minutes, then cool it in cold water.'),
 (10, 'How long should pasta cook?', 'Most dried pasta cooks in eight to twelve minutes in salted boiling water.'),
 (11, 'How do I make a simple vinaigrette?', 'Whisk three parts oil with one part vinegar, then season with salt and pepper.'),
 (12, 'What temperature bakes bread?', 'Most breads bake at around 220 degrees Celsius.'),
 (13, 'How do I reverse a list in Python?', 'Call my_list.reverse() or use slicing: my_list[::-1].'),
 (14, 'What does SQL SELECT do?', 'SELECT reads rows from one or more tables.'),
 (15, 'How do I print text in Rust?', 'Use the println! macro, for example println!("hello").'),
 (16, 'What is a primary key?', 'A primary key uniquely identifies each row of a table.'),
 (17, 'Who wrote Hamlet?', 'William Shakespeare wrote Hamlet.'),
 (18, 'Who painted the Mona Lisa?', 'Leonardo da Vinci painted the Mona Lisa.'),
 (19, 'Who composed the Ninth Symphony?', 'Ludwig van Beethoven composed the Ninth Symphony.'),
 (20, 'Who wrote Pride and Prejudice?', 'Jane Austen wrote Pride and Prejudice.');

\echo '-- embed the pool: commits per batch, resumable, progress as NOTICEs'
SET client_min_messages = notice;
CALL airrep.embed('examples', 'body', 'embedding', 'minilm', 8);
SET client_min_messages = warning;

CREATE TABLE targets AS
SELECT id, body, airrep.encode('minilm', body) AS embedding
FROM (VALUES (1, airrep.format('What is the capital of Spain?', 'Madrid is the capital of Spain.')),
             (2, airrep.format('What is 9 times 6?', '9 times 6 is 54.')),
             (3, airrep.format('Who wrote Macbeth?', 'William Shakespeare wrote Macbeth.'))) t(id, body);

\echo '-- top training rows for each target by influence (raw dot product)'
SELECT t.id AS target, r.rank, r.example, round(r.score::numeric, 3) AS influence
FROM targets t, LATERAL (
    SELECT row_number() OVER (ORDER BY e.embedding <#> t.embedding) AS rank,
           e.prompt AS example, influence(t.embedding, e.embedding) AS score
    FROM examples e ORDER BY e.embedding <#> t.embedding LIMIT 3) r
ORDER BY target, rank;

\echo '-- which subset helps each target most? attention-pooled group_influence vs sum'
CREATE TABLE subsets (subset_id int, example_id bigint);
INSERT INTO subsets VALUES
 (1, 1), (1, 2), (1, 3), (1, 4), (1, 17),
 (2, 5), (2, 6), (2, 7), (2, 8), (2, 13),
 (3, 9), (3, 10), (3, 11), (3, 12), (3, 14),
 (4, 17), (4, 18), (4, 19), (4, 20), (4, 15);
SELECT t.id AS target, s.subset_id,
       round(group_influence(t.embedding, e.embedding)::numeric, 3) AS attention,
       round(group_influence(t.embedding, e.embedding, 'sum')::numeric, 3) AS sum
FROM targets t CROSS JOIN subsets s JOIN examples e ON e.id = s.example_id
GROUP BY t.id, s.subset_id ORDER BY t.id, attention DESC;
