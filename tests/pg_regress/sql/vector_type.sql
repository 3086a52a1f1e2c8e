-- airrep_vector: text form, strict input checks, typmod, casts, operators, functions
SELECT '[1,2,3]'::airrep_vector;
SELECT ' [ 1 , 2.5e3 ,-3 ] '::airrep_vector;
SELECT '[0.1,-0,1e-7,1e30,3.4028235e38]'::airrep_vector;
SELECT '[1.5e-45]'::airrep_vector;

-- malformed text
SELECT '[1,2'::airrep_vector;
SELECT '1,2'::airrep_vector;
SELECT '[1,,2]'::airrep_vector;
SELECT '[1,2,]'::airrep_vector;
SELECT '[1] x'::airrep_vector;
SELECT '[hello]'::airrep_vector;
SELECT '[1 2]'::airrep_vector;
SELECT ''::airrep_vector;
-- values that are not finite floats
SELECT '[NaN]'::airrep_vector;
SELECT '[Infinity]'::airrep_vector;
SELECT '[-inf]'::airrep_vector;
SELECT '[1e39]'::airrep_vector;
SELECT '[-1e39]'::airrep_vector;
-- dimensions
SELECT '[]'::airrep_vector;
SELECT airrep_dims(array_fill(1, ARRAY[16000])::airrep_vector);
SELECT array_fill(1, ARRAY[16001])::airrep_vector;

-- typmod
SELECT '[1,2,3]'::airrep_vector(3);
SELECT '[1,2,3]'::airrep_vector(2);
SELECT '[1,2]'::airrep_vector(0);
SELECT '[1,2]'::airrep_vector(16001);
CREATE TABLE typmod_check (v airrep_vector(3));
INSERT INTO typmod_check VALUES ('[1,2,3]');
INSERT INTO typmod_check VALUES ('[1,2]');
INSERT INTO typmod_check VALUES (ARRAY[1,2,3,4]);
\d typmod_check
DROP TABLE typmod_check;

-- casts from and to arrays
SELECT ARRAY[1,2,3]::airrep_vector;
SELECT ARRAY[1.5,2.25]::real[]::airrep_vector;
SELECT ARRAY[1.5,2.25]::double precision[]::airrep_vector;
SELECT ARRAY[1.5,2.25]::numeric[]::airrep_vector;
SELECT ARRAY[1,2,3]::airrep_vector(3);
SELECT ARRAY[1,2,3]::airrep_vector(2);
SELECT ARRAY[1,NULL]::airrep_vector;
SELECT ARRAY[[1,2],[3,4]]::airrep_vector;
SELECT ARRAY[1e39]::double precision[]::airrep_vector;
SELECT ARRAY[1e400]::numeric[]::airrep_vector;
SELECT ARRAY['NaN']::double precision[]::airrep_vector;
SELECT ARRAY['Infinity']::double precision[]::airrep_vector;
SELECT '{}'::real[]::airrep_vector;
SELECT '[1,2.5,-3]'::airrep_vector::real[];
SELECT array_length('[1,2.5,-3]'::airrep_vector::real[], 1);

-- operators and functions
SELECT influence('[1,2,3]', '[4,5,6]');
SELECT '[1,2,3]'::airrep_vector <#> '[4,5,6]';
SELECT '[1,0]'::airrep_vector <=> '[0,1]';
SELECT '[1,1]'::airrep_vector <=> '[2,2]';
SELECT '[0,0]'::airrep_vector <=> '[1,1]';
SELECT '[0,0]'::airrep_vector <-> '[3,4]';
SELECT '[1,2,3]'::airrep_vector + '[10,20,30]';
SELECT '[1,2,3]'::airrep_vector - '[10,20,30]';
SELECT '[3e38]'::airrep_vector + '[3e38]';
SELECT airrep_dims('[1,2,3]');
SELECT airrep_norm('[3,4]');
SELECT influence('[1,2,3]', '[1,2]');
SELECT '[1,2,3]'::airrep_vector <#> '[1,2,3,4]';
SELECT '[1,2,3]'::airrep_vector <-> '[1,2,3,4]';
SELECT '[1,2,3]'::airrep_vector + '[1,2,3,4]';

-- sum and avg
SELECT sum(v), avg(v) FROM (VALUES ('[1,2]'::airrep_vector), ('[3,4]'), (NULL), ('[5,9]')) t(v);
SELECT sum(v), avg(v) FROM (VALUES (NULL::airrep_vector)) t(v);
SELECT sum(v) FROM (VALUES ('[1,2]'::airrep_vector), ('[3,4,5]')) t(v);

-- SQLSTATEs, for clients that branch on them
\set VERBOSITY sqlstate
SELECT '[1,2'::airrep_vector;
SELECT '[1e39]'::airrep_vector;
SELECT '[NaN]'::airrep_vector;
SELECT '[1]'::airrep_vector(2);
SELECT influence('[1]', '[1,2]');
SELECT ARRAY[1,NULL]::airrep_vector;
\set VERBOSITY default
